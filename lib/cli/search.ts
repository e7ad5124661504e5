/**
 * `perceiver-io search --index OUT --query FILE|TEXT [-k 10] [--model DIR|ID] [--device cpu] [--json]`
 * (options: lib/cli/commands/search.ts):
 * the rows of a batch job's output (a Parquet folder or lancedb://DIR/TABLE) nearest to a query.
 *
 * The query is embedded with the model that wrote the index (its recorded source, unless --model
 * names it elsewhere), checked by identity: another checkpoint would put the query in another
 * space (ModelMismatchError). A query that names an existing file is that file; otherwise it is
 * text (for a text model).
 */
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AutoModel } from '../auto.js';
import { modelIdentity } from '../batch/model_identity.js';
import { indexMetadata, searchIndex } from '../batch/search.js';
import { InvalidArgumentError, ModelMismatchError } from '../errors.js';
import { createMediaInputBuilder } from '../media/model_inputs.js';
import { checkpointFolder, DEVICE_DTYPES, type ComputeDType } from '../modeling/perceiver_model.js';
import { UsageError } from './usage.js';
import { RemoteReader } from '../io/remote.js';
import { useS3ForOutputs } from '../batch/store.js';

type Values = Record<string, string | boolean | string[] | undefined>;

/** `perceiver-io search` after its options are parsed (lib/cli/commands/search.ts): resolves the exit code. */
export async function runSearchCommand(values: Values): Promise<number> {
  const index = values.index as string | undefined;
  const query = values.query as string | undefined;
  if (!index) throw new UsageError('search needs --index OUT (a Parquet folder or lancedb://DIR/TABLE)');
  if (query === undefined || query === '') throw new UsageError('search needs --query FILE|TEXT');
  const k = Number(values.k);
  if (!Number.isSafeInteger(k) || k < 1) throw new UsageError(`-k wants a positive integer, got ${JSON.stringify(values.k)}`);
  if (!DEVICE_DTYPES.includes(values.dtype as ComputeDType)) throw new UsageError(`--dtype wants one of ${DEVICE_DTYPES.join(', ')}, got ${JSON.stringify(values.dtype)}`);

  let remote: RemoteReader | undefined;
  if (/^s3:\/\//i.test(index)) {
    try {
      remote = new RemoteReader({ s3Endpoint: values['s3-endpoint'] as string | undefined });
    } catch (error) {
      if (error instanceof InvalidArgumentError) throw new UsageError(error.message);
      throw error;
    }
    useS3ForOutputs(remote);
  }
  try {
    return await searchWith(index, query, k, values);
  } finally {
    await remote?.close();
  }
}

async function searchWith(index: string, query: string, k: number, values: Values): Promise<number> {
  let metadata;
  try {
    metadata = await indexMetadata(index);
  } catch (error) {
    if (error instanceof InvalidArgumentError) throw new UsageError(error.message);
    throw error;
  }
  if (!metadata) throw new UsageError(`${index} holds no rows to search`);
  const source = (values.model as string | undefined) ?? metadata.modelSource;
  if (!source) throw new UsageError(`${index} does not record its model: name it with --model DIR|ID`);
  const folder = await checkpointFolder(source, { progress: true });
  const identity = await modelIdentity(folder, source);
  if (metadata.modelId !== undefined && metadata.modelId !== identity.id) {
    throw new ModelMismatchError(index, { id: metadata.modelId, source: metadata.modelSource ?? 'unknown', file: index }, identity);
  }
  const model = await AutoModel.fromPretrained(folder, { device: values.device as string, dtype: values.dtype as ComputeDType });
  let scratch: string | undefined;
  try {
    const builder = createMediaInputBuilder(model);
    let file = query;
    if (!(await stat(query).then((s) => s.isFile(), () => false))) {
      scratch = await mkdtemp(join(tmpdir(), 'perceiver-io-query-'));
      file = join(scratch, 'query.txt');
      await writeFile(file, query);
    }
    const prepared = await builder.load(file);
    const { inputs, attentionMask } = builder.collate([prepared]);
    const embedding = (await model.embed(inputs, { attentionMask, pooling: 'mean' })).data as Float32Array;
    const hits = await searchIndex(index, embedding, k);
    hits.forEach((hit, i) => {
      if (values.json) process.stdout.write(JSON.stringify({ rank: i + 1, ...hit }) + '\n');
      else process.stdout.write(`${i + 1}\t${hit.score.toFixed(4)}\t${hit.path}${hit.label ? `\t${hit.label}` : ''}\n`);
    });
    return 0;
  } finally {
    if (scratch) await rm(scratch, { recursive: true, force: true });
    await model.dispose();
  }
}
