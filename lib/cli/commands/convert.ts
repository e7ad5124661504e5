/** `perceiver-io convert`: its option table and entry (the work is in ../convert.ts). */
import type { CommandSpec } from '../spec.js';
import { runCommand } from '../spec.js';

export const CONVERT: CommandSpec = {
  name: 'convert',
  summary: "write a checkpoint's weights (e.g. pytorch_model.bin) as model.safetensors",
  usage: ['convert --model DIR|ID [--out DIR] [--force]'],
  options: {
    model: { type: 'string', value: 'DIR|ID', required: true, help: 'checkpoint folder or Hugging Face Hub id' },
    out: { type: 'string', value: 'DIR', help: 'where to write (default: the same folder)' },
    force: { type: 'boolean', help: 'replace an existing model.safetensors' },
  },
};

export function convertCommand(args: string[]): Promise<number> {
  return runCommand(CONVERT, args, async ({ values }) => {
    const { runConvert } = await import('../convert.js');
    const summary = await runConvert({ model: values.model as string, out: values.out as string | undefined, force: values.force === true });
    process.stderr.write(summary + '\n');
    return 0;
  });
}
