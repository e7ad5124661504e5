/** A command-line usage error: the CLI prints its message on one line and exits 2. */
export class UsageError extends Error {}
