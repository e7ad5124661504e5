/**
 * A small pool of worker threads for the pure-JavaScript steps that can take more than a few
 * milliseconds (the exact resize of a large image, the parsing of a large request body), so that
 * they never hold up the main thread's event loop.
 *
 * Written here, not taken from a pool library (piscina would do), because the package takes no new
 * dependency for these ~100 lines: one task per worker at a time, tasks queue in order, workers start
 * on first use, hold the process open only while they have work, and a worker that dies is replaced
 * and fails only its own task.
 */
import { availableParallelism } from 'node:os';
import { Worker, parentPort, type Transferable } from 'node:worker_threads';
import { PerceiverError } from './errors.js';

interface Task {
  payload: unknown;
  transfer: Transferable[];
  resolve: (value: any) => void;
  reject: (error: unknown) => void;
}

interface Slot {
  worker: Worker;
  task: Task | undefined;
}

/** What a worker sends back: the task's result, or its error as plain fields. */
type Reply = { ok: true; result: unknown } | { ok: false; error: { name: string; message: string; code?: string } };

/** Workers for one module; `run` posts a payload to a free one and resolves with its answer. */
export class WorkerPool<In, Out> {
  private readonly slots: Slot[] = [];
  private readonly queue: Task[] = [];
  private closed = false;

  /**
   * @param url the worker module (it calls `serveTasks`)
   * @param size most workers at once (default: the cores but one, from 1 to 4)
   */
  constructor(
    private readonly url: URL,
    private readonly size = Math.max(1, Math.min(4, availableParallelism() - 1)),
  ) {}

  run(payload: In, transfer: Transferable[] = []): Promise<Out> {
    if (this.closed) return Promise.reject(new PerceiverError('ERR_PERCEIVER_POOL_CLOSED', 'the worker pool is closed'));
    return new Promise<Out>((resolve, reject) => {
      this.queue.push({ payload, transfer, resolve, reject });
      this.pump();
    });
  }

  /** Starts the workers now (they idle without holding the process open) instead of on first use. */
  start(): void {
    while (!this.closed && this.slots.length < this.size) this.spawn();
  }

  /** Stops every worker; queued tasks are rejected. */
  async close(): Promise<void> {
    this.closed = true;
    for (const task of this.queue.splice(0)) task.reject(new PerceiverError('ERR_PERCEIVER_POOL_CLOSED', 'the worker pool is closed'));
    await Promise.allSettled(this.slots.splice(0).map((slot) => slot.worker.terminate()));
  }

  private pump(): void {
    while (this.queue.length > 0) {
      let slot = this.slots.find((s) => s.task === undefined);
      if (!slot && this.slots.length < this.size) slot = this.spawn();
      if (!slot) return;
      const task = this.queue.shift()!;
      slot.task = task;
      slot.worker.ref();
      slot.worker.postMessage(task.payload, task.transfer);
    }
  }

  private spawn(): Slot {
    // A worker inherits this process's Node options (loaders included). With --input-type (a
    // process running code given with -e) a worker started from a file fails, so there it starts
    // from a one-line script that imports the module (which --import loaders would not see).
    const worker = process.execArgv.some((arg) => arg.startsWith('--input-type'))
      ? new Worker(`import(${JSON.stringify(this.url.href)});`, { eval: true })
      : new Worker(this.url);
    const slot: Slot = { worker, task: undefined };
    const finish = (settle: (task: Task) => void): void => {
      const task = slot.task;
      slot.task = undefined;
      worker.unref();
      if (task) settle(task);
      this.pump();
    };
    worker.on('message', (reply: Reply) =>
      finish((task) => {
        if (reply.ok) task.resolve(reply.result);
        else task.reject(Object.assign(new PerceiverError(reply.error.code ?? 'ERR_PERCEIVER_WORKER', reply.error.message), { name: reply.error.name }));
      }),
    );
    const died = (error: Error): void => {
      const index = this.slots.indexOf(slot);
      if (index < 0) return;
      this.slots.splice(index, 1);
      finish((task) => task.reject(new PerceiverError('ERR_PERCEIVER_WORKER', `a worker thread failed: ${error.message}`, { cause: error })));
    };
    worker.on('error', died);
    worker.on('exit', (code) => died(new Error(`exited with code ${code}`)));
    // After the listeners: adding a 'message' listener refs the worker again.
    worker.unref();
    this.slots.push(slot);
    return slot;
  }
}

/** The worker side: answers each posted payload with `handler`'s result (and the buffers to transfer back). */
export function serveTasks<In, Out>(handler: (payload: In) => { result: Out; transfer?: Transferable[] } | Promise<{ result: Out; transfer?: Transferable[] }>): void {
  const port = parentPort;
  if (!port) throw new Error('serveTasks() runs in a worker thread');
  port.on('message', async (payload: In) => {
    let reply: Reply;
    let transfer: Transferable[] = [];
    try {
      const out = await handler(payload);
      reply = { ok: true, result: out.result };
      transfer = out.transfer ?? [];
    } catch (error) {
      const e = error as { name?: string; message?: string; code?: string };
      reply = { ok: false, error: { name: String(e?.name ?? 'Error'), message: String(e?.message ?? error), ...(typeof e?.code === 'string' ? { code: e.code } : {}) } };
    }
    port.postMessage(reply, transfer);
  });
}

/** The URL of a sibling module of `base` (an import.meta.url), with base's own extension: .ts under a TypeScript loader, .js from dist. */
export function siblingModule(base: string, name: string): URL {
  return new URL(`./${name}${base.endsWith('.ts') ? '.ts' : '.js'}`, base);
}
