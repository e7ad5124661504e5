/** `perceiver-io search`: its option table and entry (the work is in ../search.ts). */
import type { CommandSpec } from '../spec.js';
import { checkOptional } from '../../optional.js';
import { runCommand } from '../spec.js';

export const SEARCH: CommandSpec = {
  name: 'search',
  summary: 'the rows of an embed/classify output nearest to a query (file or text)',
  usage: ['search --index OUT --query FILE|TEXT [options]'],
  description: `The rows of an embed/classify output nearest (cosine) to the query, best first: rank, score,
path. The query is embedded with the model the index records (or --model, which must be the
same checkpoint).`,
  options: {
    index: { type: 'string', value: 'OUT', required: true, help: 'a folder of Parquet parts, s3://BUCKET/PREFIX, or lancedb://DIR/TABLE' },
    's3-endpoint': { type: 'string', value: 'URL', help: 'an S3-compatible store for an s3:// index (credentials: the AWS chain)' },
    query: { type: 'string', value: 'FILE|TEXT', required: true, help: 'a media file, or text (when no such file exists)' },
    k: { type: 'string', value: 'N', short: 'k', default: '10', help: 'how many rows' },
    model: { type: 'string', value: 'DIR|ID', help: 'the checkpoint (default: the one the index records)' },
    device: { type: 'string', value: 'DEVICE', default: 'cpu', help: 'where to embed the query: cpu, cuda or cuda:N' },
    dtype: { type: 'string', value: 'DTYPE', default: 'float32', help: 'compute precision' },
    json: { type: 'boolean', help: 'one JSON object per line: {rank, score, id, path, label?}' },
  },
};

export function searchCommand(args: string[]): Promise<number> {
  return runCommand(SEARCH, args, async ({ values }) => {
    const lance = typeof values.index === 'string' && values.index.startsWith('lancedb://');
    await checkOptional('apache-arrow', ...(lance ? (['@lancedb/lancedb'] as const) : (['parquet-wasm'] as const)));
    return (await import('../search.js')).runSearchCommand(values);
  });
}
