/** WorkerPool (lib/worker_pool.ts), the threads the service and the image processor move heavy work to. */
import t, { type Test } from 'tap';
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { WorkerPool } from '../lib/worker_pool.js';
import { REPO } from './helpers/fixtures.js';

/** A worker module in a temporary folder that doubles numbers, throws on 'throw' and exits on 'crash'. */
async function workerModule(t: Test, poolModule: string): Promise<URL> {
  const dir = await mkdtemp(join(tmpdir(), 'perceiver-pool-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, 'worker.mjs');
  await writeFile(
    file,
    `import { serveTasks } from ${JSON.stringify(pathToFileURL(poolModule).href)};
serveTasks(async (p) => {
  if (p === 'crash') process.exit(3);
  if (p === 'throw') throw Object.assign(new Error('bad input'), { code: 'ERR_TEST' });
  await new Promise((r) => setTimeout(r, 5));
  return { result: p * 2 };
});
`,
  );
  return pathToFileURL(file);
}

t.test('tasks run in order of submission, errors and crashes fail only their own task', async (t) => {
  const pool = new WorkerPool<number | string, number>(await workerModule(t, join(REPO, 'lib', 'worker_pool.ts')), 2);
  t.teardown(() => pool.close());
  const inputs = Array.from({ length: 12 }, (_, i) => i);
  t.same(await Promise.all(inputs.map((i) => pool.run(i))), inputs.map((i) => i * 2), '12 tasks on 2 workers, each answer to its own task');
  await t.rejects(pool.run('throw'), { code: 'ERR_TEST', message: 'bad input' }, 'a task that throws rejects with its code and message');
  const [crashed, after] = await Promise.allSettled([pool.run('crash'), pool.run(21)]);
  t.equal(crashed.status, 'rejected', 'the task whose worker died is rejected');
  t.match((crashed as PromiseRejectedResult).reason, { code: 'ERR_PERCEIVER_WORKER' });
  t.same(after, { status: 'fulfilled', value: 42 }, 'a task beside it still runs');
  t.equal(await pool.run(50), 100, 'a new worker replaces the dead one');
  await pool.close();
  await t.rejects(pool.run(1), { code: 'ERR_PERCEIVER_POOL_CLOSED' }, 'no task after close()');
});

t.test('idle workers do not keep the process alive, busy ones do', async (t) => {
  // Runs from dist (plain JavaScript), as an installed package does.
  const worker = await workerModule(t, join(REPO, 'dist', 'lib', 'worker_pool.js'));
  const script = `import { WorkerPool } from ${JSON.stringify(pathToFileURL(join(REPO, 'dist', 'lib', 'worker_pool.js')).href)};
const pool = new WorkerPool(new URL(${JSON.stringify(worker.href)}), 2);
pool.start();
pool.run(20).then((v) => console.log('answer', v));`;
  const started = performance.now();
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr.on('data', (c: Buffer) => (err += c.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  clearTimeout(timer);
  t.equal(code, 0, `the process exits by itself ${err.trim()}`);
  t.match(out, /answer 40/, 'after its pending task answered');
  t.ok(performance.now() - started < 20_000, `in ${(performance.now() - started).toFixed(0)} ms`);
});
