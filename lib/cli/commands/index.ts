/** Every command of the CLI: its option table (for parsing and --help) and its entry. */
import type { CommandSpec } from '../spec.js';
import { CONVERT, convertCommand } from './convert.js';
import { DOCTOR, doctorCommand } from './doctor.js';
import { CLASSIFY, EMBED, embedCommand } from './embed.js';
import { INFER, inferCommand } from './infer.js';
import { PIPELINE_SPECS, pipelineCommand } from './pipelines.js';
import { SEARCH, searchCommand } from './search.js';
import { SERVE, serveCommand } from './serve.js';
import { WORKER, workerCommand } from './worker.js';

export interface Command {
  spec: CommandSpec;
  run(args: string[]): Promise<number>;
}

export const COMMANDS: readonly Command[] = [
  { spec: INFER, run: inferCommand },
  { spec: CONVERT, run: convertCommand },
  { spec: SERVE, run: serveCommand },
  { spec: EMBED, run: (args) => embedCommand('embed', args) },
  { spec: CLASSIFY, run: (args) => embedCommand('classify', args) },
  { spec: WORKER, run: workerCommand },
  { spec: SEARCH, run: searchCommand },
  ...PIPELINE_SPECS.map((spec) => ({ spec, run: (args: string[]) => pipelineCommand(spec, args) })),
  { spec: DOCTOR, run: doctorCommand },
];

/** The global help: one line per command. */
export function globalHelp(): string {
  const width = Math.max(...COMMANDS.map((c) => c.spec.name.length)) + 2;
  return [
    'Usage: perceiver-io <command> [options]',
    '',
    'Commands:',
    ...COMMANDS.map((c) => `  ${c.spec.name.padEnd(width)}${c.spec.summary}`),
    '',
    "perceiver-io <command> --help shows that command's options and defaults.",
    '',
    'Options:',
    '  -h, --help      show this help',
    '  -v, --version   show the version',
  ].join('\n');
}
