/**
 * One declarative option table per command: the table node:util parseArgs parses is the one the
 * command's --help prints, so the two cannot drift apart.
 */
import { parseArgs } from 'node:util';
import { UsageError } from './usage.js';

export interface OptionSpec {
  type: 'string' | 'boolean';
  /** The value's placeholder in the help (string options), e.g. DIR. */
  value?: string;
  /** Applied when the option is absent, and shown in the help as "(default X)". */
  default?: string;
  multiple?: boolean;
  short?: string;
  /** The command refuses to run without it (a usage error, exit 2). */
  required?: boolean;
  /** One line, or several joined by "\n". */
  help: string;
}

export interface CommandSpec {
  name: string;
  /** One line for the list of commands in the global help. */
  summary: string;
  /** Synopsis lines, each after "perceiver-io ". */
  usage: string[];
  description?: string;
  options: Record<string, OptionSpec>;
  /** Whether the command takes operands (files, a text, ...). */
  positionals?: boolean;
  /** Printed after the options (exit codes, notes). */
  footer?: string;
}

export type OptionValues = Record<string, string | boolean | string[] | undefined>;

export interface ParsedCommand {
  values: OptionValues;
  positionals: string[];
  /** The options given on the command line (not filled in from a default). */
  given: Set<string>;
  help: boolean;
}

const HELP_OPTION: OptionSpec = { type: 'boolean', short: 'h', help: 'show this help' };
const COLUMN = 26;

/** Parses `args` against the command's table; a usage error names the command. */
export function parseCommand(spec: CommandSpec, args: string[]): ParsedCommand {
  const options = Object.fromEntries(
    Object.entries({ ...spec.options, help: HELP_OPTION }).map(([name, o]) => [
      name,
      { type: o.type, ...(o.short ? { short: o.short } : {}), ...(o.multiple ? { multiple: true } : {}), ...(o.default !== undefined ? { default: o.multiple ? [o.default] : o.default } : {}) },
    ]),
  );
  let parsed;
  try {
    parsed = parseArgs({ args, options: options as never, strict: true, allowPositionals: spec.positionals === true, tokens: true });
  } catch (error) {
    throw new UsageError(`${spec.name}: ${(error as Error).message}`);
  }
  const values = parsed.values as OptionValues;
  const given = new Set(parsed.tokens.flatMap((token) => (token.kind === 'option' ? [token.name] : [])));
  const help = values.help === true;
  delete values.help;
  if (!help) {
    for (const [name, o] of Object.entries(spec.options)) {
      if (o.required && (values[name] === undefined || values[name] === '')) throw new UsageError(`${spec.name} needs --${name}`);
    }
  }
  return { values, positionals: parsed.positionals, given, help };
}

/** The command's --help text, from its table. */
export function formatHelp(spec: CommandSpec): string {
  const lines = spec.usage.map((usage, i) => `${i === 0 ? 'Usage:' : '      '} perceiver-io ${usage}`);
  if (spec.description) lines.push('', spec.description);
  lines.push('', 'Options:');
  for (const [name, o] of Object.entries({ ...spec.options, help: HELP_OPTION })) {
    const flag = `${o.short ? `-${o.short}, ` : ''}--${name}${o.type === 'string' ? ` ${o.value ?? 'VALUE'}` : ''}`;
    const text = (o.help + (o.default !== undefined ? ` (default ${o.default})` : '') + (o.required ? ' (required)' : '') + (o.multiple ? ' (repeatable)' : '')).split('\n');
    const head = `  ${flag}`;
    if (head.length < COLUMN - 1) lines.push(head.padEnd(COLUMN) + text[0]);
    else lines.push(head, ' '.repeat(COLUMN) + text[0]);
    for (const more of text.slice(1)) lines.push(' '.repeat(COLUMN) + more);
  }
  if (spec.footer) lines.push('', spec.footer);
  return lines.join('\n');
}

/** Parses; on --help prints the help on stdout and resolves 0, else hands the parse to `run`. */
export async function runCommand(spec: CommandSpec, args: string[], run: (parsed: ParsedCommand) => Promise<number>): Promise<number> {
  const parsed = parseCommand(spec, args);
  if (parsed.help) {
    process.stdout.write(formatHelp(spec) + '\n');
    return 0;
  }
  return run(parsed);
}

/** An integer option of at least `min`, or undefined when absent. */
export function integerOption(values: OptionValues, name: string, min = 1): number | undefined {
  const raw = values[name];
  if (raw === undefined) return undefined;
  const n = Number(raw);
  if (typeof raw !== 'string' || raw.trim() === '' || !Number.isSafeInteger(n) || n < min) throw new UsageError(`--${name} wants an integer of at least ${min}, got ${String(raw)}`);
  return n;
}
