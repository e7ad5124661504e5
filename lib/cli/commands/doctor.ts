/** `perceiver-io doctor`: its option table and entry (the report is ../doctor.ts). */
import type { CommandSpec } from '../spec.js';
import { runCommand } from '../spec.js';

export const DOCTOR: CommandSpec = {
  name: 'doctor',
  summary: 'what this installation runs on (addon, CPU features, CUDA, GPUs, Hub cache)',
  usage: ['doctor [--json]'],
  description: `Reports what this installation runs on: the native addon (prebuilt or built from source), the
CPU's vector features and matrix-product library, CUDA (driver, cuBLAS / cuBLASLt, each GPU and
its memory) and the Hugging Face cache, with what to install where something is missing.`,
  options: {
    json: { type: 'boolean', help: 'one JSON object on stdout, for scripts' },
  },
  footer: 'Exit status: 0 when the addon loads (whether or not a GPU is usable), 1 when it does not.',
};

export function doctorCommand(args: string[]): Promise<number> {
  return runCommand(DOCTOR, args, async ({ values }) => (await import('../doctor.js')).runDoctorCommand({ json: values.json === true }));
}
