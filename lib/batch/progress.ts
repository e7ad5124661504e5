/**
 * Progress of a batch job on stderr: a cli-progress bar (done / total, rate, ETA, failures) when
 * the stream is a terminal, plain lines at most every `intervalMs` otherwise (logs and CI keep
 * them readable), and always a last line when stopped.
 */
import type { Writable } from 'node:stream';

export interface ProgressReporter {
  /** Sets the number of items to do and starts the clock. */
  start(total: number): void;
  update(done: number, failed: number): void;
  /** Writes a line of its own (e.g. a skipped file) without breaking the bar. */
  log(line: string): void;
  /** Draws the last state and releases the terminal. */
  stop(): void;
}

export interface ProgressOptions {
  /** Leads every line, e.g. "perceiver-io embed". */
  label: string;
  stream?: Writable & { isTTY?: boolean };
  /** Whether to draw a bar (default: whether the stream is a terminal). */
  tty?: boolean;
  /** Plain mode: the shortest time between two lines (default 5000 ms). */
  intervalMs?: number;
}

function formatSeconds(seconds: number): string {
  if (!Number.isFinite(seconds)) return '?';
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

export async function createProgressReporter(options: ProgressOptions): Promise<ProgressReporter> {
  const stream = options.stream ?? process.stderr;
  let started = performance.now();
  let total = 0;
  let last = { done: 0, failed: 0 };
  let running = false;
  const rateOf = (done: number) => done / Math.max((performance.now() - started) / 1000, 1e-3);

  if (options.tty ?? stream.isTTY === true) {
    const { SingleBar, Presets } = await import('cli-progress');
    const bar = new SingleBar(
      {
        stream,
        format: `${options.label} {bar} {percentage}% | {value}/{total} | {rate} items/s | ETA {eta_formatted} | {failed} failed`,
        hideCursor: true,
        etaBuffer: 50,
        fps: 5,
      },
      Presets.shades_classic,
    );
    return {
      start(count) {
        total = count;
        started = performance.now();
        running = true;
        bar.start(total, 0, { rate: '0.0', failed: 0 });
      },
      update(done, failed) {
        last = { done, failed };
        if (running) bar.update(done, { rate: rateOf(done).toFixed(1), failed });
      },
      log(line) {
        // Clear the bar's line, write ours, and let the bar draw itself again below it.
        stream.write(`${running ? '\r\x1b[K' : ''}${line}\n`);
        if (running) bar.update(last.done, { rate: rateOf(last.done).toFixed(1), failed: last.failed });
      },
      stop() {
        if (running) bar.stop();
        running = false;
      },
    };
  }

  const intervalMs = options.intervalMs ?? 5000;
  let lastLine = -Infinity;
  let printed = { done: -1, failed: -1 };
  const line = (done: number, failed: number) => {
    printed = { done, failed };
    const rate = rateOf(done);
    const percent = total > 0 ? ((100 * done) / total).toFixed(1) : '100.0';
    const eta = done >= total ? '0s' : formatSeconds(rate > 0 ? (total - done) / rate : Infinity);
    stream.write(`${options.label}: ${done}/${total} (${percent}%), ${rate.toFixed(1)} items/s, ETA ${eta}, ${failed} failed\n`);
    lastLine = performance.now();
  };
  return {
    start(count) {
      total = count;
      started = performance.now();
      running = true;
    },
    update(done, failed) {
      last = { done, failed };
      if (running && performance.now() - lastLine >= intervalMs) line(done, failed);
    },
    log(text) {
      stream.write(`${text}\n`);
    },
    stop() {
      if (running && (printed.done !== last.done || printed.failed !== last.failed)) line(last.done, last.failed);
      running = false;
    },
  };
}
