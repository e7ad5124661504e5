#!/usr/bin/env node
/**
 * The perceiver-io command line.
 *
 *   perceiver-io infer --model DIR --inputs IN.safetensors --output OUT.safetensors [--device cpu] [--dtype float32]
 *
 * Any failure prints one line on stderr and exits non-zero (2 for a usage error, 1 otherwise):
 * never a stack trace, never a signal.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { packageRoot } from '../native/binding.js';
import { PerceiverError } from '../errors.js';
import { runInfer } from './infer.js';

class UsageError extends Error {}

const USAGE = `Usage: perceiver-io <command> [options]

Commands:
  infer     Run a checkpoint on tensors from a safetensors file and write its outputs
            --model DIR             Hugging Face checkpoint folder (config.json + model.safetensors)
            --inputs FILE           safetensors with "input" (or "input.<modality>"), optionally
                                    "call.attention_mask" and "call.subsampled_output_points.<modality>"
            --output FILE           safetensors to write: "logits" (or "logits.<modality>") and
                                    "last_hidden_state", float32
            --device cpu            where to run (default cpu)
            --dtype float32         compute precision (default float32)

Options:
  -h, --help      show this help
  -v, --version   show the version`;

function version(): string {
  return JSON.parse(readFileSync(join(packageRoot(), 'package.json'), 'utf8')).version as string;
}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command === undefined || command === '-h' || command === '--help' || command === 'help') {
    process.stdout.write(USAGE + '\n');
    return command === undefined ? 2 : 0;
  }
  if (command === '-v' || command === '--version') {
    process.stdout.write(version() + '\n');
    return 0;
  }
  if (command !== 'infer') throw new UsageError(`unknown command "${command}" (try --help)`);
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args: rest,
      options: {
        model: { type: 'string' },
        inputs: { type: 'string' },
        output: { type: 'string' },
        device: { type: 'string', default: 'cpu' },
        dtype: { type: 'string', default: 'float32' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  if (values.help) {
    process.stdout.write(USAGE + '\n');
    return 0;
  }
  for (const required of ['model', 'inputs', 'output'] as const) {
    if (typeof values[required] !== 'string' || values[required] === '') throw new UsageError(`infer needs --${required}`);
  }
  const summary = await runInfer({
    model: values.model as string,
    inputs: values.inputs as string,
    output: values.output as string,
    device: values.device as string,
    dtype: values.dtype as string,
  });
  process.stderr.write(summary + '\n');
  return 0;
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
    process.stderr.write(`perceiver-io: ${oneLine(error)}\n`);
    process.exitCode = error instanceof UsageError ? 2 : 1;
  },
);
