/**
 * Hostile-load benchmark of the HTTP service (`npm run bench:hostile`):
 *
 *   node dist/bench/hostile_load.js [--seconds 10] [--rounds 3] [--hostile-nice 0] [--json FILE]
 *
 * The windows alternate, unloaded then hostile, --rounds times, each --seconds long, so that both
 * phases see the same background load on a shared machine. The hostile clients run in a process of
 * their own; --hostile-nice N runs it at that nice level, which on a machine with few cores stands
 * for hostile clients elsewhere (their own sending then takes no CPU from the server and the normal
 * clients), while the server's work on the hostile requests stays at normal priority.
 *
 * Two servers run as child processes (`perceiver-io serve` with its default limits): a text
 * classifier (test/fixtures/text-classification) and an image classifier
 * (test/fixtures/image-conv, 224x224 input). On 127.0.0.1:
 *
 * - unloaded windows: normal clients only (4 text clients, 1 image client, back to back);
 * - hostile windows: the same normal clients beside hostile ones:
 *    - image bombs: 2 clients sending a complete 16383x16383 PNG (805 MB of pixels in 0.8 MB);
 *    - huge texts: 2 clients sending 1 MiB - 64 bytes of text (the body limit), 1 sending 19 MB;
 *    - malformed JSON: 2 clients;
 *    - slow bodies: 16 connections trickling one byte every 500 ms (reopened when closed);
 *    - slow headers: 4 connections trickling their headers.
 *
 * Measured: the normal clients' failures (a non-200 or a top label that differs from the unloaded
 * answer; goal 0), their p50/p99 in both phases (goal: p99 hostile within 2x of unloaded), the
 * worst /health latency (probed every 100 ms), each server's peak RSS (/proc, every 200 ms), and
 * what the hostile requests got. Exits 1 when a goal is missed or a server dies; 2 on bad arguments.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import sharp from 'sharp';
import { packageRoot } from '../lib/native/binding.js';
import { machineInfo } from './common.js';
import { bombPng, openRaw, postHead, type RawConnection } from './hostile_clients.js';
import { machineBusySeconds, processCpuSeconds, rssMiB } from './proc.js';

interface Server {
  name: string;
  child: ChildProcess;
  url: string;
  stderr: string[];
  rss: number[];
}

const REQUEST_TIMEOUT_MS = 60_000;

async function startServer(name: string, fixture: string): Promise<Server> {
  const cli = fileURLToPath(new URL('../lib/cli/main.js', import.meta.url));
  const child = spawn(process.execPath, [cli, 'serve', '--model', resolve(packageRoot(), 'test/fixtures', fixture), '--port', '0'], { stdio: ['ignore', 'ignore', 'pipe'] });
  const server: Server = { name, child, url: '', stderr: [], rss: [] };
  server.url = await new Promise<string>((resolveUrl, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name}: no "serving" line within 60 s`)), 60_000);
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (text: string) => {
      server.stderr.push(...text.split('\n').filter(Boolean));
      const match = /serving \S+ on (http:\/\/\S+)/.exec(text);
      if (match) {
        clearTimeout(timer);
        resolveUrl(match[1]!);
      }
    });
    child.once('exit', (code) => reject(new Error(`${name} exited (${code}): ${server.stderr.join(' ')}`)));
  });
  return server;
}




/** Cores used over a phase: each server, the normal clients (this process), the hostile clients' process and the whole machine. */
function cpuMeter(servers: Server[], hostilePid: number): () => { servers: number[]; generator: number; hostileClients: number; machine: number } {
  const start = { at: performance.now(), servers: servers.map((s) => processCpuSeconds(s.child.pid!)), self: process.cpuUsage(), hostile: processCpuSeconds(hostilePid), machine: machineBusySeconds() };
  return () => {
    const wall = (performance.now() - start.at) / 1000;
    const self = process.cpuUsage(start.self);
    return {
      servers: servers.map((s, i) => (processCpuSeconds(s.child.pid!) - start.servers[i]!) / wall),
      generator: (self.user + self.system) / 1e6 / wall,
      hostileClients: (processCpuSeconds(hostilePid) - start.hostile) / wall,
      machine: (machineBusySeconds() - start.machine) / wall,
    };
  };
}

function percentile(values: number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

async function postJson(url: string, body: string | Buffer): Promise<{ status: number | string; text: string; ms: number }> {
  const started = performance.now();
  try {
    const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body, signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
    const text = await res.text();
    return { status: res.status, text, ms: performance.now() - started };
  } catch (error) {
    const cause = (error as { cause?: { code?: string } }).cause;
    return { status: `network:${cause?.code ?? (error as Error).name}`, text: '', ms: performance.now() - started };
  }
}

function topLabel(text: string): string | undefined {
  try {
    return (JSON.parse(text) as { labels?: { label: string }[] }).labels?.[0]?.label;
  } catch {
    return undefined;
  }
}

interface NormalResult {
  latencies: number[];
  failures: number;
  examples: string[];
}

async function main(): Promise<number> {
  let seconds = 10;
  let rounds = 3;
  let nice = 0;
  let jsonFile: string | undefined;
  try {
    const { values } = parseArgs({ options: { seconds: { type: 'string' }, rounds: { type: 'string' }, 'hostile-nice': { type: 'string' }, json: { type: 'string' }, help: { type: 'boolean', short: 'h' } }, strict: true });
    if (values.help) {
      console.log('usage: node dist/bench/hostile_load.js [--seconds 10] [--rounds 3] [--hostile-nice 0] [--json FILE]');
      return 0;
    }
    if (values.seconds !== undefined) {
      seconds = Number(values.seconds);
      if (!(seconds > 0 && seconds <= 600)) throw new Error(`--seconds wants a number from 0 to 600, got '${values.seconds}'`);
    }
    if (values.rounds !== undefined) {
      rounds = Number(values.rounds);
      if (!(Number.isSafeInteger(rounds) && rounds >= 1 && rounds <= 20)) throw new Error(`--rounds wants an integer from 1 to 20, got '${values.rounds}'`);
    }
    if (values['hostile-nice'] !== undefined) {
      nice = Number(values['hostile-nice']);
      if (!(Number.isSafeInteger(nice) && nice >= 0 && nice <= 19)) throw new Error(`--hostile-nice wants an integer from 0 to 19, got '${values['hostile-nice']}'`);
    }
    jsonFile = values.json;
  } catch (error) {
    console.error((error as Error).message);
    return 2;
  }

  const machine = machineInfo();
  const log = (line: string): void => void process.stderr.write(`  [${new Date().toISOString().slice(11, 19)}] ${line}\n`);
  const servers: Server[] = [];
  let sampler: NodeJS.Timeout | undefined;
  let hostileChild: ChildProcess | undefined;
  try {
    const smallPng = await sharp(Buffer.from(Array.from({ length: 64 * 48 * 3 }, (_, i) => (i * 37) & 255)), { raw: { width: 64, height: 48, channels: 3 } }).png().toBuffer();
    const normalImage = Buffer.from(JSON.stringify({ image: smallPng.toString('base64') }));
    const texts = ['The delivery arrived two days late.', 'Great value.', 'Das Essen war kalt, aber die Bedienung war freundlich.', 'Five stars 🌟🌟🌟', 'Returned it.', 'I would buy this again without thinking twice.'];
    const textBodies = new Map(texts.map((t) => [t, Buffer.from(JSON.stringify({ text: t }))]));
    servers.push(await startServer('text', 'text-classification'), await startServer('image', 'image-conv'));
    const [text, image] = servers as [Server, Server];
    sampler = setInterval(() => servers.forEach((s) => s.rss.push(rssMiB(s.child.pid!))), 200);
    // The hostile clients run in a worker thread of their own, so that building and sending their
    // large bodies never delays the normal clients' event loop (and so their latencies).
    const self = fileURLToPath(import.meta.url);
    const childArgs = [self, '--hostile-clients', text.url, image.url];
    const worker = spawn(nice > 0 ? 'nice' : process.execPath, nice > 0 ? ['-n', String(nice), process.execPath, ...childArgs] : childArgs, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    hostileChild = worker;
    log(`hostile clients: process ${worker.pid}${nice > 0 ? ` at nice ${nice}` : ''}, building their bodies`);
    await new Promise<void>((resolveReady, reject) => {
      worker.once('message', (m: unknown) => (m === 'ready' ? resolveReady() : reject(new Error(String(m)))));
      worker.once('exit', (code) => reject(new Error(`the hostile clients' process exited (${code})`)));
    });

    // Reference answers, unloaded: the top label of each normal request.
    const expected = new Map<string, string | undefined>();
    for (const t of texts) expected.set(`text:${t}`, topLabel((await postJson(`${text.url}/classify`, textBodies.get(t)!)).text));
    expected.set('image', topLabel((await postJson(`${image.url}/classify`, normalImage)).text));
    if ([...expected.values()].some((v) => v === undefined)) throw new Error(`a reference request failed: ${JSON.stringify([...expected])}`);

    async function normalClients(stopAt: number): Promise<{ text: NormalResult; image: NormalResult }> {
      const results = { text: { latencies: [], failures: 0, examples: [] } as NormalResult, image: { latencies: [], failures: 0, examples: [] } as NormalResult };
      const one = async (kind: 'text' | 'image', id: number): Promise<void> => {
        let i = id;
        while (performance.now() < stopAt) {
          const key = kind === 'image' ? 'image' : `text:${texts[i++ % texts.length]}`;
          const body = kind === 'image' ? normalImage : textBodies.get(key.slice(5))!;
          const answer = await postJson(`${(kind === 'image' ? image : text).url}/classify`, body);
          const r = results[kind];
          const label = answer.status === 200 ? topLabel(answer.text) : undefined;
          if (answer.status === 200 && label === expected.get(key)) r.latencies.push(answer.ms);
          else {
            r.failures++;
            if (r.examples.length < 5) r.examples.push(`${kind}: ${answer.status} ${answer.text.slice(0, 100)}`);
          }
        }
      };
      await Promise.all([...Array.from({ length: 4 }, (_, id) => one('text', id)), one('image', 0)]);
      return results;
    }

    async function healthProbe(stopAt: number): Promise<number> {
      let worst = 0;
      while (performance.now() < stopAt) {
        for (const server of servers) {
          const started = performance.now();
          const res = await fetch(`${server.url}/health`, { signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) }).catch(() => undefined);
          await res?.arrayBuffer();
          worst = Math.max(worst, res?.status === 200 ? performance.now() - started : Infinity);
        }
        await new Promise((r) => setTimeout(r, 100));
      }
      return worst;
    }

    // Unloaded and hostile windows alternate, `rounds` times, so that both phases see the same
    // background load on a shared machine; each phase's figures are over all of its windows.
    const merge = (into: NormalResult, from: NormalResult): void => {
      into.latencies.push(...from.latencies);
      into.failures += from.failures;
      into.examples.push(...from.examples.slice(0, 5 - into.examples.length));
    };
    const phases = {
      unloaded: { text: { latencies: [], failures: 0, examples: [] } as NormalResult, image: { latencies: [], failures: 0, examples: [] } as NormalResult, health: 0, peak: [0, 0], cpu: [] as ReturnType<ReturnType<typeof cpuMeter>>[] },
      hostile: { text: { latencies: [], failures: 0, examples: [] } as NormalResult, image: { latencies: [], failures: 0, examples: [] } as NormalResult, health: 0, peak: [0, 0], cpu: [] as ReturnType<ReturnType<typeof cpuMeter>>[] },
    };
    let hostileOutcomes: Record<string, Record<string, number>> = {};
    for (let round = 1; round <= rounds; round++) {
      for (const phase of ['unloaded', 'hostile'] as const) {
        log(`round ${round}/${rounds}, ${phase}: 4 text + 1 image normal clients${phase === 'hostile' ? ' beside image bombs, huge texts, malformed JSON, slow bodies and headers' : ''}, ${seconds} s`);
        const rssFrom = servers.map((s) => s.rss.length);
        const stopAt = performance.now() + seconds * 1000;
        let hostile: Promise<Record<string, Record<string, number>>> | undefined;
        if (phase === 'hostile') {
          worker.send({ seconds });
          hostile = new Promise((resolveOutcomes) => worker.once('message', (m) => resolveOutcomes(m as Record<string, Record<string, number>>)));
        }
        const meter = cpuMeter(servers, worker.pid!);
        const [normal, health] = await Promise.all([normalClients(stopAt), healthProbe(stopAt)]);
        const into = phases[phase];
        into.cpu.push(meter());
        if (hostile) hostileOutcomes = await hostile;
        merge(into.text, normal.text);
        merge(into.image, normal.image);
        into.health = Math.max(into.health, health);
        servers.forEach((s, i) => (into.peak[i] = Math.max(into.peak[i]!, ...s.rss.slice(rssFrom[i]))));
      }
    }
    clearInterval(sampler);
    const meanCpu = (list: ReturnType<ReturnType<typeof cpuMeter>>[]) => ({
      servers: servers.map((_, i) => list.reduce((a, c) => a + c.servers[i]!, 0) / list.length),
      generator: list.reduce((a, c) => a + c.generator, 0) / list.length,
      hostileClients: list.reduce((a, c) => a + c.hostileClients, 0) / list.length,
      machine: list.reduce((a, c) => a + c.machine, 0) / list.length,
    });
    const unloaded = phases.unloaded;
    const loaded = phases.hostile;
    const unloadedHealth = unloaded.health;
    const loadedHealth = loaded.health;
    const unloadedPeak = unloaded.peak;
    const hostilePeak = loaded.peak;
    const unloadedCpu = meanCpu(unloaded.cpu);
    const hostileCpu = meanCpu(loaded.cpu);
    for (const server of servers) if (server.child.exitCode !== null) throw new Error(`${server.name} server died: ${server.stderr.slice(-5).join(' ')}`);

    const stats = (r: NormalResult) => ({ requests: r.latencies.length, failures: r.failures, p50: percentile(r.latencies, 50), p99: percentile(r.latencies, 99), max: Math.max(...r.latencies), examples: r.examples });
    const result = {
      unloaded: { text: stats(unloaded.text), image: stats(unloaded.image), worstHealthMs: unloadedHealth, peakRssMiB: unloadedPeak, coresUsed: unloadedCpu },
      hostile: { text: stats(loaded.text), image: stats(loaded.image), worstHealthMs: loadedHealth, peakRssMiB: hostilePeak, coresUsed: hostileCpu, outcomes: hostileOutcomes },
    };
    const f = (x: number): string => (Number.isFinite(x) ? x.toFixed(1) : String(x));
    console.log(`perceiver-io hostile load, ${machine.date}; ${machine.cpuModel}, ${machine.cores} cores, load ${machine.loadAverage.map((x) => x.toFixed(2)).join(' ')} at start; ${rounds} rounds of ${seconds} s unloaded + ${seconds} s hostile; hostile clients at nice ${nice}`);
    console.log('| phase | normal clients | requests | failures | p50 ms | p99 ms | max ms |');
    console.log('|---|---|---|---|---|---|---|');
    for (const phase of ['unloaded', 'hostile'] as const) {
      for (const kind of ['text', 'image'] as const) {
        const s = result[phase][kind];
        console.log(`| ${phase} | ${kind} /classify | ${s.requests} | ${s.failures} | ${f(s.p50)} | ${f(s.p99)} | ${f(s.max)} |`);
      }
    }
    console.log(`- p99 hostile / unloaded: text ${f(result.hostile.text.p99 / result.unloaded.text.p99)}x, image ${f(result.hostile.image.p99 / result.unloaded.image.p99)}x (goal within 2x)`);
    console.log(`- worst /health latency: unloaded ${f(unloadedHealth)} ms, hostile ${f(loadedHealth)} ms`);
    console.log(`- peak RSS (MiB): text server ${f(unloadedPeak[0]!)} unloaded, ${f(hostilePeak[0]!)} hostile; image server ${f(unloadedPeak[1]!)} unloaded, ${f(hostilePeak[1]!)} hostile`);
    const cores = (c: typeof unloadedCpu): string => `text server ${c.servers[0]!.toFixed(2)}, image server ${c.servers[1]!.toFixed(2)}, normal clients ${c.generator.toFixed(2)}, hostile clients ${c.hostileClients.toFixed(2)}, whole machine ${c.machine.toFixed(2)} of ${machine.cores}`;
    console.log(`- cores used: unloaded: ${cores(unloadedCpu)}; hostile: ${cores(hostileCpu)}`);
    for (const [kind, outcomes] of Object.entries(hostileOutcomes)) console.log(`- hostile ${kind}: ${JSON.stringify(outcomes)}`);
    for (const e of [...loaded.text.examples, ...loaded.image.examples]) console.log(`  normal failure: ${e}`);

    const problems: string[] = [];
    if (loaded.text.failures + loaded.image.failures + unloaded.text.failures + unloaded.image.failures > 0) problems.push('normal clients failed');
    for (const kind of ['text', 'image'] as const) {
      if (!(result.hostile[kind].p99 <= 2 * result.unloaded[kind].p99)) problems.push(`${kind} p99 ${f(result.hostile[kind].p99)} ms is more than 2x the unloaded ${f(result.unloaded[kind].p99)} ms`);
    }
    console.log(problems.length === 0 ? '\nPASS' : `\nMISSED: ${problems.join('; ')}`);
    const json = JSON.stringify({ bench: 'hostile-load', machine, seconds, rounds, hostileNice: nice, result, pass: problems.length === 0, problems });
    console.log(json);
    if (jsonFile) writeFileSync(jsonFile, json + '\n');
    return problems.length === 0 ? 0 : 1;
  } catch (error) {
    console.error(`hostile load benchmark failed: ${(error as Error).message}`);
    return 1;
  } finally {
    clearInterval(sampler);
    if (hostileChild && hostileChild.exitCode === null) hostileChild.kill('SIGKILL');
    for (const server of servers) {
      if (server.child.exitCode === null) {
        const exited = new Promise((r) => server.child.once('exit', r));
        server.child.kill('SIGTERM');
        const timer = setTimeout(() => server.child.kill('SIGKILL'), 15_000);
        await exited;
        clearTimeout(timer);
      }
    }
  }
}

/**
 * The hostile clients, in a process of their own (so that building and sending their large bodies
 * never delays the normal clients' event loop): builds its bodies, says 'ready', runs a window each
 * time it is told, answers with the outcomes so far.
 */
async function hostileClients(urls: { text: string; image: string }): Promise<void> {
  const port = { postMessage: (m: unknown) => process.send!(m), once: (event: 'message', listener: (m: any) => void) => process.once(event, listener) };
  process.once('disconnect', () => process.exit(0));
  const connections = new Set<RawConnection>();
  const text = { url: urls.text };
  const image = { url: urls.image };
  // Bodies as Buffers, built once: sending them costs no encoding.
  const bomb = Buffer.from(JSON.stringify({ image: (await bombPng(16383, 16383)).toString('base64') }));
  const hugeText = Buffer.from(JSON.stringify({ text: 'w'.repeat(1024 * 1024 - 64 - 12) }));
  const tooLarge = Buffer.alloc(19 * 1024 * 1024, 0x61);
  const malformed = ['{"text": ', '{"text": 42}', '[1,2,3', 'null', '{"image": "***"}', '\u0000\u0001', '{"text": "a", "image": "b"}'].map((m) => Buffer.from(m));
  port.postMessage('ready');
    const hostileOutcomes: Record<string, Record<string, number>> = {};
    const count = (kind: string, outcome: string | number): void => {
      hostileOutcomes[kind] ??= {};
      hostileOutcomes[kind][String(outcome)] = (hostileOutcomes[kind][String(outcome)] ?? 0) + 1;
    };
    async function hostileLoop(kind: string, url: string, body: () => string | Buffer, stopAt: number): Promise<void> {
      while (performance.now() < stopAt) count(kind, (await postJson(url, body())).status);
    }
    async function slowBody(server: { url: string }, stopAt: number): Promise<void> {
      while (performance.now() < stopAt) {
        const conn = await openRaw(server.url);
        connections.add(conn);
        await conn.write(postHead('/classify', 10_000) + '{"text": "');
        while (!conn.socket.destroyed && performance.now() < stopAt) {
          await new Promise((r) => setTimeout(r, 500));
          await conn.write('s');
        }
        count('slow body', conn.socket.destroyed ? (/^HTTP\/1\.1 (\d+)/.exec(conn.received())?.[1] ?? 'closed') : 'held to the end');
        conn.destroy();
        connections.delete(conn);
      }
    }
    async function slowHeaders(server: { url: string }, stopAt: number): Promise<void> {
      while (performance.now() < stopAt) {
        const conn = await openRaw(server.url);
        connections.add(conn);
        const head = 'POST /embed HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ';
        await conn.write(head);
        while (!conn.socket.destroyed && performance.now() < stopAt) {
          await new Promise((r) => setTimeout(r, 500));
          await conn.write('h');
        }
        count('slow headers', conn.socket.destroyed ? (/^HTTP\/1\.1 (\d+)/.exec(conn.received())?.[1] ?? 'closed') : 'held to the end');
        conn.destroy();
        connections.delete(conn);
      }
    }

  let m = 0;
  // One window per message from the main thread; the outcomes add up over the windows.
  for (;;) {
    const { seconds } = await new Promise<{ seconds: number }>((r) => port.once('message', r));
    const stopAt = performance.now() + seconds * 1000;
    await Promise.all([
      hostileLoop('image bomb 16383x16383', `${image.url}/embed`, () => bomb, stopAt),
      hostileLoop('image bomb 16383x16383', `${image.url}/classify`, () => bomb, stopAt),
      hostileLoop('huge text 1 MiB', `${text.url}/embed`, () => hugeText, stopAt),
      hostileLoop('huge text 1 MiB', `${text.url}/classify`, () => hugeText, stopAt),
      hostileLoop('body 19 MB', `${text.url}/embed`, () => tooLarge, stopAt),
      hostileLoop('malformed JSON', `${text.url}/classify`, () => malformed[m++ % malformed.length]!, stopAt),
      hostileLoop('malformed JSON', `${image.url}/classify`, () => malformed[m++ % malformed.length]!, stopAt),
      ...Array.from({ length: 12 }, () => slowBody(text, stopAt)),
      ...Array.from({ length: 4 }, () => slowBody(image, stopAt)),
      ...Array.from({ length: 2 }, () => slowHeaders(text, stopAt)),
      ...Array.from({ length: 2 }, () => slowHeaders(image, stopAt)),
    ]);
    for (const conn of connections) conn.destroy();
    port.postMessage(hostileOutcomes);
  }
}

if (process.argv[2] === '--hostile-clients') await hostileClients({ text: process.argv[3]!, image: process.argv[4]! });
else process.exitCode = await main();
