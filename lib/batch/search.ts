/**
 * Nearest neighbours in a batch job's output: a folder of Parquet parts (a scan of every committed
 * row, cosine similarity) or a LanceDB table (`lancedb://DIR/TABLE`, LanceDB's vector search with
 * the cosine distance: a flat search, or the table's index when one was built).
 */
import { InvalidArgumentError } from '../errors.js';
import { parseLanceOut } from './lance.js';
import { listParts, metadataOf, readPart, rowsOf, withCommittedParts, type PartMetadata } from './parquet.js';

export interface SearchHit {
  id: string;
  path: string;
  /** Cosine similarity to the query, in [-1, 1]. */
  score: number;
  label?: string;
}

/** What wrote the index (task, width, model identity and source), or undefined for an empty one. */
export async function indexMetadata(index: string): Promise<PartMetadata | undefined> {
  const lance = parseLanceOut(index);
  if (lance) {
    const meta = await withLanceTable(index, lance, async (table) => (await table.schema()).metadata);
    const task = meta.get('perceiver_io.task');
    if (task !== 'embed' && task !== 'classify') return undefined;
    return { task, model: meta.get('perceiver_io.model') ?? '', width: Number(meta.get('perceiver_io.width')), modelId: meta.get('perceiver_io.model_id'), modelSource: meta.get('perceiver_io.model_source') };
  }
  return withCommittedParts(index, async (files) => (files.length === 0 ? undefined : metadataOf(await readPart(files[0]!), files[0]!)));
}

/** `use` on the LanceDB table `index` names (an InvalidArgumentError when there is none), closed after. */
async function withLanceTable<T>(index: string, lance: { dir: string; table: string }, use: (table: import('@lancedb/lancedb').Table) => Promise<T>): Promise<T> {
  const { loadLance } = await import('./lance.js');
  const { lancedb } = await loadLance();
  const connection = await lancedb.connect(lance.dir);
  try {
    if (!(await connection.tableNames()).includes(lance.table)) throw new InvalidArgumentError('index', 'an existing LanceDB table', index, `${index}: no such table`);
    const table = await connection.openTable(lance.table);
    try {
      return await use(table);
    } finally {
      table.close();
    }
  } finally {
    connection.close();
  }
}

function checkQuery(query: unknown, k: unknown): asserts query is Float32Array {
  if (!(query instanceof Float32Array) || query.length === 0) throw new InvalidArgumentError('query', 'a Float32Array embedding', query);
  if (typeof k !== 'number' || !Number.isSafeInteger(k) || k < 1) throw new InvalidArgumentError('k', 'a positive integer', k);
}

function norm(v: Float32Array): number {
  let s = 0;
  for (let i = 0; i < v.length; i++) s += v[i]! * v[i]!;
  return Math.sqrt(s);
}

/** The `k` rows of `index` most similar (cosine) to `query`, best first. */
export async function searchIndex(index: string, query: Float32Array, k = 10): Promise<SearchHit[]> {
  checkQuery(query, k);
  const lance = parseLanceOut(index);
  if (lance) {
    const rows = await withLanceTable(index, lance, (table) => table.vectorSearch(Array.from(query)).distanceType('cosine').limit(k).toArray());
    return rows.map((row: Record<string, unknown>) => {
      const hit: SearchHit = { id: row.id as string, path: row.path as string, score: 1 - (row._distance as number) };
      if (typeof row.label === 'string') hit.label = row.label;
      return hit;
    });
  }
  const queryNorm = norm(query) || 1;
  // A bounded list of the best so far: the scan holds one part at a time, not the whole index.
  const best: SearchHit[] = [];
  await withCommittedParts(index, async (files) => {
    best.length = 0;
    for (const file of files) {
      for (const row of rowsOf(await readPart(file), file)) {
        if (row.embedding.length !== query.length) throw new InvalidArgumentError('query', `an embedding of width ${row.embedding.length} (the index's)`, `width ${query.length}`);
        let dot = 0;
        for (let i = 0; i < query.length; i++) dot += query[i]! * row.embedding[i]!;
        const score = dot / (queryNorm * (norm(row.embedding) || 1));
        if (best.length < k || score > best[best.length - 1]!.score) {
          const hit: SearchHit = { id: row.id, path: row.path, score };
          if (row.label !== undefined) hit.label = row.label;
          best.push(hit);
          best.sort((a, b) => b.score - a.score);
          if (best.length > k) best.pop();
        }
      }
    }
  });
  return best;
}

export { listParts };
