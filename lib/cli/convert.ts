/**
 * `perceiver-io convert`: a checkpoint folder's weights (pytorch_model.bin, read without executing
 * anything) written as model.safetensors, with config.json and the other small files copied along.
 */
import { promises as fsp } from 'node:fs';
import { join, resolve } from 'node:path';
import { PerceiverConfig } from '../config.js';
import { InvalidArgumentError } from '../errors.js';
import { loadCheckpointWeights } from '../io/checkpoint.js';
import { writeSafetensors } from '../io/safetensors.js';
import { writeFileAtomic } from '../io/temp_file.js';
import { checkpointFolder } from '../modeling/perceiver_model.js';

export interface ConvertOptions {
  model: string;
  out?: string;
  force?: boolean;
}

/** Files copied from the source folder next to the converted weights. */
const COMPANIONS = ['config.json', 'preprocessor_config.json', 'tokenizer_config.json', 'special_tokens_map.json', 'generation_config.json'];

export async function runConvert(options: ConvertOptions): Promise<string> {
  const source = await checkpointFolder(options.model, { progress: true });
  await PerceiverConfig.fromPretrained(source); // a readable config before any work
  const out = options.out ?? source;
  const target = join(out, 'model.safetensors');
  if (!options.force && (await fsp.stat(target).catch(() => undefined))) {
    throw new InvalidArgumentError('--out', `a folder without model.safetensors (or --force to replace it)`, `${target} already exists`);
  }
  const { tensors, files } = await loadCheckpointWeights(source);
  await fsp.mkdir(out, { recursive: true });
  await writeSafetensors(target, tensors, { format: 'pt', converted_by: 'perceiver-io' });
  if (resolve(out) !== resolve(source)) {
    for (const name of COMPANIONS) {
      // Read and rewritten through an exclusive temporary file: copyFile would follow a link
      // planted at the target's name.
      const text = await fsp.readFile(join(source, name)).catch((error: NodeJS.ErrnoException) => {
        if (error.code !== 'ENOENT') throw error;
      });
      if (text !== undefined) await writeFileAtomic(join(out, name), text);
    }
  }
  return `perceiver-io: converted ${tensors.size} tensors from ${files.join(', ')} to ${target}`;
}
