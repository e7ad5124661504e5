#!/usr/bin/env node
/**
 * The perceiver-io command line: `perceiver-io <command> [options]`, each command's options in
 * lib/cli/commands/ (one table per command, parsed and printed by --help).
 *
 * Any failure prints one line on stderr and exits non-zero (2 for a usage error, which points at
 * the command's --help; 1 otherwise): never a stack trace, never a signal.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from '../native/binding.js';
import { PerceiverError } from '../errors.js';
import { COMMANDS, globalHelp } from './commands/index.js';
import { formatHelp } from './spec.js';
import { UsageError } from './usage.js';

function version(): string {
  return JSON.parse(readFileSync(join(packageRoot(), 'package.json'), 'utf8')).version as string;
}

/** The command line's first word, for pointing a usage error at its --help. */
let commandName: string | undefined;

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command === undefined) {
    process.stderr.write(globalHelp() + '\n');
    return 2;
  }
  if (command === '-h' || command === '--help' || command === 'help') {
    // `perceiver-io help embed` is `perceiver-io embed --help`.
    const named = command === 'help' && rest.length === 1 ? COMMANDS.find((c) => c.spec.name === rest[0]) : undefined;
    process.stdout.write((named ? formatHelp(named.spec) : globalHelp()) + '\n');
    return 0;
  }
  if (command === '-v' || command === '--version') {
    process.stdout.write(version() + '\n');
    return 0;
  }
  const found = COMMANDS.find((c) => c.spec.name === command);
  if (!found) throw new UsageError(`unknown command "${command}"`);
  commandName = command;
  return found.run(rest);
}

function oneLine(error: unknown): string {
  if (error instanceof PerceiverError || error instanceof UsageError) return error.message.split('\n')[0]!;
  if (error instanceof Error) return `${error.name}: ${error.message.split('\n')[0]}`;
  return String(error);
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    let line = oneLine(error);
    if (error instanceof UsageError) line += commandName ? ` (see perceiver-io ${commandName} --help)` : ' (see perceiver-io --help)';
    process.stderr.write(`perceiver-io: ${line}\n`);
    process.exitCode = error instanceof UsageError ? 2 : 1;
  },
);
