/** `perceiver-io infer`: its option table and entry (the work is in ../infer.ts). */
import type { CommandSpec } from '../spec.js';
import { runCommand } from '../spec.js';

export const INFER: CommandSpec = {
  name: 'infer',
  summary: 'run a checkpoint on tensors from a safetensors file and write its outputs',
  usage: ['infer --model DIR --inputs FILE --output FILE [options]'],
  options: {
    model: { type: 'string', value: 'DIR', required: true, help: 'Hugging Face checkpoint folder (config.json + model.safetensors) or Hub id' },
    inputs: { type: 'string', value: 'FILE', required: true, help: 'safetensors with "input" (or "input.<modality>"), optionally\n"call.attention_mask" and "call.subsampled_output_points.<modality>"' },
    output: { type: 'string', value: 'FILE', required: true, help: 'safetensors to write: "logits" (or "logits.<modality>") and\n"last_hidden_state", float32' },
    device: { type: 'string', value: 'DEVICE', default: 'cpu', help: 'where to run: cpu, cuda or cuda:N' },
    dtype: { type: 'string', value: 'DTYPE', default: 'float32', help: 'compute precision' },
  },
};

export function inferCommand(args: string[]): Promise<number> {
  return runCommand(INFER, args, async ({ values }) => {
    const { runInfer } = await import('../infer.js');
    const summary = await runInfer({
      model: values.model as string,
      inputs: values.inputs as string,
      output: values.output as string,
      device: values.device as string,
      dtype: values.dtype as string,
    });
    process.stderr.write(summary + '\n');
    return 0;
  });
}
