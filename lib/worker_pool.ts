/**
 * A small pool of worker threads for the pure-JavaScript steps that can take more than a few
 * milliseconds (the exact resize of a large image, the parsing of a large request body), so that
 * they never hold up the main thread's event loop.
 *
 * Written here, not taken from a pool library (piscina would do), because the package takes no new
 * dependency for these ~100 lines: one task per worker at a time (or up to `tasksPerWorker`, for
 * handlers that mostly wait on I/O or on libuv's threads), tasks queue in order, workers start on
 * first use, hold the process open only while they have work, and a worker that dies is replaced
 * and fails only the tasks it held.
 */
import { availableParallelism } from 'node:os';
import { Worker, parentPort, type Transferable } from 'node:worker_threads';
import { PerceiverError } from './errors.js';

interface Task {
  id: number;
  payload: unknown;
  transfer: Transferable[];
  resolve: (value: any) => void;
  reject: (error: unknown) => void;
}

interface Slot {
  worker: Worker;
  /** The tasks posted to it and not yet answered, by id. */
  tasks: Map<number, Task>;
}

/** What the pool posts: the task's id and payload. */
interface Posted {
  id: number;
  payload: unknown;
}

/** What a worker sends back: the task's id and result, or its error as plain fields. */
type Reply = { id: number } & ({ ok: true; result: unknown } | { ok: false; error: { name: string; message: string; code?: string } });

/** Workers for one module; `run` posts a payload to a free one and resolves with its answer. */
export class WorkerPool<In, Out> {
  private readonly slots: Slot[] = [];
  private readonly queue: Task[] = [];
  private closed = false;
  private nextId = 0;

  /**
   * @param url the worker module (it calls `serveTasks`)
   * @param size most workers at once (default: the cores but one, from 1 to 4)
   * @param tasksPerWorker most tasks a worker holds at once (default 1)
   */
  constructor(
    private readonly url: URL,
    private readonly size = Math.max(1, Math.min(4, availableParallelism() - 1)),
    private readonly tasksPerWorker = 1,
  ) {}

  run(payload: In, transfer: Transferable[] = []): Promise<Out> {
    if (this.closed) return Promise.reject(new PerceiverError('ERR_PERCEIVER_POOL_CLOSED', 'the worker pool is closed'));
    return new Promise<Out>((resolve, reject) => {
      this.queue.push({ id: this.nextId++, payload, transfer, resolve, reject });
      this.pump();
    });
  }

  /** Starts the workers now (they idle without holding the process open) instead of on first use. */
  start(): void {
    while (!this.closed && this.slots.length < this.size) this.spawn();
  }

  /** Stops every worker; queued tasks and those in the workers' hands are rejected. */
  async close(): Promise<void> {
    this.closed = true;
    const slots = this.slots.splice(0);
    const held = [...this.queue.splice(0), ...slots.flatMap((slot) => [...slot.tasks.values()])];
    for (const slot of slots) slot.tasks.clear();
    for (const task of held) task.reject(new PerceiverError('ERR_PERCEIVER_POOL_CLOSED', 'the worker pool is closed'));
    await Promise.allSettled(slots.map((slot) => slot.worker.terminate()));
  }

  private pump(): void {
    while (this.queue.length > 0) {
      // The least busy worker; a new one rather than a second task for a busy one.
      let slot = this.slots.reduce<Slot | undefined>((best, s) => (best && best.tasks.size <= s.tasks.size ? best : s), undefined);
      if ((!slot || slot.tasks.size > 0) && this.slots.length < this.size) slot = this.spawn();
      if (!slot || slot.tasks.size >= this.tasksPerWorker) return;
      const task = this.queue.shift()!;
      slot.tasks.set(task.id, task);
      slot.worker.ref();
      slot.worker.postMessage({ id: task.id, payload: task.payload } satisfies Posted, task.transfer);
    }
  }

  private spawn(): Slot {
    // A worker inherits this process's Node options (loaders included). With --input-type (a
    // process running code given with -e) a worker started from a file fails, so there it starts
    // from a one-line script that imports the module (which --import loaders would not see).
    const worker = process.execArgv.some((arg) => arg.startsWith('--input-type'))
      ? new Worker(`import(${JSON.stringify(this.url.href)});`, { eval: true })
      : new Worker(this.url);
    const slot: Slot = { worker, tasks: new Map() };
    worker.on('message', (reply: Reply) => {
      const task = slot.tasks.get(reply.id);
      slot.tasks.delete(reply.id);
      if (slot.tasks.size === 0) worker.unref();
      if (task) {
        if (reply.ok) task.resolve(reply.result);
        else task.reject(Object.assign(new PerceiverError(reply.error.code ?? 'ERR_PERCEIVER_WORKER', reply.error.message), { name: reply.error.name }));
      }
      this.pump();
    });
    const died = (error: Error): void => {
      const index = this.slots.indexOf(slot);
      if (index < 0) return;
      this.slots.splice(index, 1);
      worker.unref();
      const held = [...slot.tasks.values()];
      slot.tasks.clear();
      for (const task of held) task.reject(new PerceiverError('ERR_PERCEIVER_WORKER', `a worker thread failed: ${error.message}`, { cause: error }));
      this.pump();
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
  port.on('message', async ({ id, payload }: { id: number; payload: In }) => {
    let reply: Reply;
    let transfer: Transferable[] = [];
    try {
      const out = await handler(payload);
      reply = { id, ok: true, result: out.result };
      transfer = out.transfer ?? [];
    } catch (error) {
      const e = error as { name?: string; message?: string; code?: string };
      reply = { id, ok: false, error: { name: String(e?.name ?? 'Error'), message: String(e?.message ?? error), ...(typeof e?.code === 'string' ? { code: e.code } : {}) } };
    }
    port.postMessage(reply, transfer);
  });
}

/** The URL of a sibling module of `base` (an import.meta.url), with base's own extension: .ts under a TypeScript loader, .js from dist. */
export function siblingModule(base: string, name: string): URL {
  return new URL(`./${name}${base.endsWith('.ts') ? '.ts' : '.js'}`, base);
}
