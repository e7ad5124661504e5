/** What the batch tests compare a job's rows with: the model's embedding of one text, alone. */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createMediaInputBuilder } from '../../lib/media/model_inputs.js';
import type { PerceiverModel } from '../../lib/modeling/perceiver_model.js';

/** The mean-pooled embedding `model` gives `text` read from a file (written into `dir`), as the batch job reads it. */
export async function embeddingOfText(model: PerceiverModel<any>, dir: string, text: string): Promise<Float32Array> {
  const file = join(dir, `alone-${Math.random().toString(36).slice(2)}.txt`);
  await writeFile(file, text);
  const prepared = await createMediaInputBuilder(model).load(file);
  return (await model.embed(prepared.inputs as never, { attentionMask: prepared.attentionMask as never, pooling: 'mean' })).data as Float32Array;
}
