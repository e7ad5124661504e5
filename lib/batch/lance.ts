/**
 * A LanceDB table as the output of a batch job (`--out lancedb://DIR/TABLE`).
 *
 * Columns: `id` (utf8), `path` (utf8), `vector` (fixed_size_list<float32>[width]: LanceDB's
 * default vector column, so `table.search(v)` needs no column name), and for classify `label` and
 * `score`, with content ids `paths`. The table's schema metadata carries the same keys as a
 * Parquet part's (task, model, width, model identity, id kind); a run against a table of another
 * task, width, model or id kind is refused as with a folder of parts.
 *
 * Exactly once under kills and reruns: every batch is one `mergeInsert` on `id` that inserts only
 * ids not yet in the table, and each is one Lance commit (a new version, atomic): a kill loses at
 * most the batches in flight, a batch written twice adds nothing, and a rerun skips the ids there.
 * At the end of a run the table's fragments are compacted (`optimize`, also one atomic commit).
 *
 * @lancedb/lancedb is an optional dependency, loaded on first use. It takes apache-arrow objects of
 * its own copy of the library (the CommonJS build), so tables for it are built with that build.
 */
import { createRequire } from 'node:module';
import { InvalidArgumentError, ModelMismatchError } from '../errors.js';
import { requireOptional } from '../optional.js';
import type { EmbeddingColumns, PartMetadata } from './parquet.js';

type LanceModule = typeof import('@lancedb/lancedb');
type Arrow = typeof import('apache-arrow');

/** `lancedb://DIR/TABLE` split (DIR may be relative: `lancedb://out/db/items`), or undefined. */
export function parseLanceOut(out: string): { dir: string; table: string } | undefined {
  const m = /^lancedb:\/\/(.+)\/([A-Za-z0-9_][A-Za-z0-9_.-]*)$/.exec(out);
  if (!out.startsWith('lancedb://')) return undefined;
  if (!m) throw new InvalidArgumentError('--out', 'lancedb://DIR/TABLE (a table name of letters, digits, _ . -)', out);
  return { dir: m[1]!, table: m[2]! };
}

let modules: Promise<{ lancedb: LanceModule; arrow: Arrow }> | undefined;

/** @lancedb/lancedb and the apache-arrow build it uses, or a MissingDependencyError saying what to install (lib/optional.ts). */
export async function loadLance(): Promise<{ lancedb: LanceModule; arrow: Arrow }> {
  modules ??= requireOptional<LanceModule>('@lancedb/lancedb').then(
    (lancedb) => {
      const require = createRequire(import.meta.url);
      // The build LanceDB itself requires: its instanceof checks fail on the ES module build's classes.
      const arrow = createRequire(require.resolve('@lancedb/lancedb'))('apache-arrow') as Arrow;
      return { lancedb, arrow };
    },
    (error: unknown) => {
      modules = undefined;
      throw error;
    },
  );
  return modules;
}

const META = { task: 'perceiver_io.task', model: 'perceiver_io.model', width: 'perceiver_io.width', modelId: 'perceiver_io.model_id', modelSource: 'perceiver_io.model_source', idKind: 'perceiver_io.id_kind' };

function schemaOf(arrow: Arrow, metadata: PartMetadata, withPaths: boolean): import('apache-arrow').Schema {
  const fields: import('apache-arrow').Field[] = [
    new arrow.Field('id', new arrow.Utf8(), true),
    new arrow.Field('path', new arrow.Utf8(), true),
    new arrow.Field('vector', new arrow.FixedSizeList(metadata.width, new arrow.Field('item', new arrow.Float32(), true)), true),
  ];
  if (metadata.task === 'classify') fields.push(new arrow.Field('label', new arrow.Utf8(), true), new arrow.Field('score', new arrow.Float32(), true));
  if (withPaths) fields.push(new arrow.Field('paths', new arrow.List(new arrow.Field('item', new arrow.Utf8(), true)), true));
  const meta = new Map<string, string>([
    [META.task, metadata.task],
    [META.model, metadata.model],
    [META.width, String(metadata.width)],
    [META.idKind, metadata.idKind ?? 'path'],
  ]);
  if (metadata.modelId !== undefined) meta.set(META.modelId, metadata.modelId);
  if (metadata.modelSource !== undefined) meta.set(META.modelSource, metadata.modelSource);
  return new arrow.Schema(fields, meta);
}

/** One run's handle on its table. */
export class LanceOutput {
  private constructor(
    private readonly arrow: Arrow,
    private readonly connection: import('@lancedb/lancedb').Connection,
    readonly table: import('@lancedb/lancedb').Table,
    private readonly schema: import('apache-arrow').Schema,
    readonly where: string,
  ) {}

  /** Opens the table (creating it empty when missing) and checks that it holds this run's kind of rows. */
  static async open(dir: string, name: string, metadata: PartMetadata): Promise<LanceOutput> {
    const { lancedb, arrow } = await loadLance();
    const where = `lancedb://${dir}/${name}`;
    const connection = await lancedb.connect(dir);
    const schema = schemaOf(arrow, metadata, metadata.idKind === 'content');
    const table = (await connection.tableNames()).includes(name) ? await connection.openTable(name) : await connection.createEmptyTable(name, schema, { existOk: true });
    const found = (await table.schema()).metadata;
    const other = { task: found.get(META.task), width: Number(found.get(META.width)), modelId: found.get(META.modelId), modelSource: found.get(META.modelSource), idKind: found.get(META.idKind) ?? 'path' };
    if (other.task === undefined) throw new InvalidArgumentError('--out', 'a LanceDB table written by perceiver-io', where, `${where} exists and was not written by perceiver-io: use another table`);
    if (other.task !== metadata.task || other.width !== metadata.width) {
      throw new InvalidArgumentError('--out', `a table of ${metadata.task} rows of width ${metadata.width}`, where, `${where} holds ${other.task} rows of width ${other.width}, not ${metadata.task} of width ${metadata.width}: use another table`);
    }
    if (metadata.modelId !== undefined && other.modelId !== metadata.modelId) {
      throw new ModelMismatchError(where, { id: other.modelId ?? 'none recorded', source: other.modelSource ?? 'unknown', file: where }, { id: metadata.modelId, source: metadata.modelSource ?? metadata.modelId });
    }
    if (other.idKind !== (metadata.idKind ?? 'path')) {
      throw new InvalidArgumentError('--out', `a table with ${metadata.idKind ?? 'path'} ids`, where, `${where} holds ${other.idKind} ids, not ${metadata.idKind ?? 'path'} ids: use --id ${other.idKind} or another table`);
    }
    return new LanceOutput(arrow, connection, table, await table.schema(), where);
  }

  /** The ids in the table. */
  async doneIds(): Promise<Set<string>> {
    const ids = new Set<string>();
    for await (const batch of this.table.query().select(['id'])) {
      const column = batch.getChild('id');
      for (let i = 0; i < batch.numRows; i++) ids.add(column!.get(i) as string);
    }
    return ids;
  }

  /** Inserts the rows whose id is not in the table yet (one atomic commit); returns how many were inserted. */
  async write(columns: EmbeddingColumns): Promise<number> {
    const { arrow } = this;
    const rows = columns.ids.length;
    const vectorField = this.schema.fields.find((f) => f.name === 'vector')!;
    const values = arrow.makeData({ type: new arrow.Float32(), length: rows * columns.width, data: columns.embeddings });
    const vectors: Record<string, import('apache-arrow').Vector> = {
      id: arrow.vectorFromArray(columns.ids, new arrow.Utf8()),
      path: arrow.vectorFromArray(columns.paths, new arrow.Utf8()),
      vector: arrow.makeVector(arrow.makeData({ type: vectorField.type, length: rows, nullCount: 0, child: values })),
    };
    if (this.schema.fields.some((f) => f.name === 'label')) {
      vectors.label = arrow.vectorFromArray(columns.labels ?? [], new arrow.Utf8());
      vectors.score = arrow.makeVector(columns.scores ?? new Float32Array(rows));
    }
    if (this.schema.fields.some((f) => f.name === 'paths')) vectors.paths = arrow.vectorFromArray(columns.allPaths ?? columns.paths.map((p) => [p]), this.schema.fields.find((f) => f.name === 'paths')!.type);
    const plain = new arrow.Table(vectors);
    const data = new arrow.Table(new arrow.Schema(plain.schema.fields, this.schema.metadata), plain.batches);
    const result = await this.table.mergeInsert('id').whenNotMatchedInsertAll().execute(data);
    return result.numInsertedRows;
  }

  /** Merges the table's small fragments (one commit per batch) and drops old versions' files. */
  async optimize(): Promise<void> {
    await this.table.optimize({ cleanupOlderThan: new Date(Date.now() - 60_000) });
  }

  close(): void {
    this.table.close();
    this.connection.close();
  }
}
