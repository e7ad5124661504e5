/**
 * `perceiver-io doctor`: what this installation runs on, and what to install where something is
 * missing. The native addon (which binary, prebuilt or built from source), the CPU's vector
 * features and the matrix-product library the engine uses, CUDA (driver, cuBLAS / cuBLASLt, every
 * GPU and its memory), and the Hugging Face cache. `--json` prints the same as one JSON object.
 *
 * Reads `capabilities()` defensively: fields that only some builds report (`cpu.gemm`,
 * `cuda.driverVersion`, `cuda.runtimeVersion`) are shown when present.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { lstat, readdir } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { delimiter, dirname, isAbsolute, join, relative, sep } from 'node:path';
import { defaultHubCacheDir } from '../hub/download.js';
import { loadAddon, packageRoot, type NativeCapabilities } from '../native/binding.js';


export interface DoctorReport {
  node: { version: string; napi: string | undefined; platform: string; glibc?: string };
  addon: {
    loaded: boolean;
    /** The .node file: picked by node-gyp-build, or named by PERCEIVER_IO_PREBUILD. */
    path?: string;
    /** 'prebuilt' (prebuilds/), 'source build' (build/), or 'PERCEIVER_IO_PREBUILD'. */
    kind?: 'prebuilt' | 'source build' | 'PERCEIVER_IO_PREBUILD';
    error?: string;
  };
  cpu: {
    model?: string;
    /** What the processor offers (from /proc/cpuinfo on Linux). */
    features: { avx512f: boolean; avx2: boolean; fma: boolean } | null;
    /** What the engine uses for matrix products (capabilities().cpu.gemm, else .blas). */
    products?: string;
    threads?: number;
  };
  cuda: {
    compiled: boolean;
    available: boolean;
    reason?: string;
    /** The NVIDIA kernel driver's version (/proc/driver/nvidia/version), e.g. "550.54.15". */
    driver?: string;
    /** The newest CUDA version that driver supports (capabilities().cuda.driverVersion), e.g. "12.4". */
    driverCuda?: string;
    /** The CUDA runtime linked into the binary (capabilities().cuda.runtimeVersion), e.g. "13.0". */
    runtime?: string;
    cublas: { found: boolean; detail?: string };
    cublasLt: { found: boolean; path?: string };
    gpus: { index: number; name: string; freeBytes?: number; totalBytes?: number }[];
    /** What to install for the GPU to be usable; absent when it is. */
    advice?: string;
  };
  hubCache: { path: string; exists: boolean; bytes: number; models: number };
}

/** The CPU's name and vector features, from /proc/cpuinfo (null where there is none). */
function cpuInfo(): { model?: string; features: DoctorReport['cpu']['features'] } {
  let text: string;
  try {
    text = readFileSync('/proc/cpuinfo', 'utf8');
  } catch {
    return { features: null };
  }
  const model = /^model name\s*:\s*(.+)$/m.exec(text)?.[1]?.trim();
  const flags = new Set((/^flags\s*:\s*(.+)$/m.exec(text)?.[1] ?? '').split(/\s+/));
  return { model, features: { avx512f: flags.has('avx512f'), avx2: flags.has('avx2'), fma: flags.has('fma') } };
}

/** The NVIDIA kernel driver's version, from /proc (Linux); the engine reports the CUDA version it supports. */
function kernelDriverVersion(): string | undefined {
  try {
    return /Kernel Module\s+([\d.]+)/.exec(readFileSync('/proc/driver/nvidia/version', 'utf8'))?.[1];
  } catch {
    return undefined;
  }
}

/**
 * Where the dynamic loader would find a library: LD_LIBRARY_PATH, then ldconfig's cache. The
 * engine loads cuBLAS itself (and reports it); cuBLAS in turn loads cuBLASLt, which the engine
 * never names, so this looks for it the way the loader would.
 */
function findSharedLibrary(prefix: string, besides?: string): string | undefined {
  // cuBLAS finds cuBLASLt beside itself first (its RPATH), e.g. in a pip wheel's folder.
  const dirs = [...(besides && isAbsolute(besides) ? [dirname(besides)] : []), ...(process.env.LD_LIBRARY_PATH ?? '').split(delimiter).filter(Boolean)];
  for (const dir of dirs) {
    try {
      const hit = readdirSync(dir).find((f) => f.startsWith(prefix + '.so'));
      if (hit) return join(dir, hit);
    } catch {
      // unreadable folder: the loader skips it too
    }
  }
  for (const ldconfig of ['/sbin/ldconfig', '/usr/sbin/ldconfig']) {
    if (!existsSync(ldconfig)) continue;
    try {
      const cache = execFileSync(ldconfig, ['-p'], { encoding: 'utf8', timeout: 5_000, stdio: ['ignore', 'pipe', 'ignore'] });
      const line = cache.split('\n').find((l) => l.trim().startsWith(prefix + '.so'));
      if (line) return line.split('=>').pop()?.trim();
    } catch {
      // no cache to read
    }
    break;
  }
  return undefined;
}

/** Total bytes of the files under `dir` (symbolic links counted as links, as the Hub cache's snapshots are). */
async function folderBytes(dir: string): Promise<number> {
  let total = 0;
  let entries;
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch {
    return 0;
  }
  for (const entry of entries) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) total += await folderBytes(path);
    else if (entry.isFile()) total += (await lstat(path).catch(() => ({ size: 0 }))).size; // gone meanwhile: nothing to count
  }
  return total;
}

async function hubCache(): Promise<DoctorReport['hubCache']> {
  const path = defaultHubCacheDir();
  if (!existsSync(path)) return { path, exists: false, bytes: 0, models: 0 };
  const models = (await readdir(path).catch(() => [] as string[])).filter((d) => d.startsWith('models--')).length;
  return { path, exists: true, bytes: await folderBytes(path), models };
}

/** Which binary the loader takes: the same rule as lib/native/binding.ts (override, else node-gyp-build). */
function addonFile(root: string): { path: string; kind: NonNullable<DoctorReport['addon']['kind']> } {
  const override = process.env.PERCEIVER_IO_PREBUILD;
  if (override) return { path: override, kind: 'PERCEIVER_IO_PREBUILD' };
  const require = createRequire(import.meta.url);
  const path = (require('node-gyp-build') as { path(dir: string): string }).path(root);
  return { path, kind: relative(root, path).split(sep)[0] === 'prebuilds' ? 'prebuilt' : 'source build' };
}

function text(value: unknown): string | undefined {
  if (value === undefined || value === null || value === '') return undefined;
  return typeof value === 'string' ? value : JSON.stringify(value);
}

export async function doctorReport(): Promise<DoctorReport> {
  const glibc = (process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined)?.header?.glibcVersionRuntime;
  const node = { version: process.version, napi: process.versions.napi, platform: `${process.platform}-${process.arch}`, ...(glibc ? { glibc } : {}) };
  const { model, features } = cpuInfo();
  const report: DoctorReport = {
    node,
    addon: { loaded: false },
    cpu: { model, features },
    cuda: { compiled: false, available: false, cublas: { found: false }, cublasLt: { found: false }, gpus: [] },
    hubCache: await hubCache(),
  };

  let caps: NativeCapabilities | undefined;
  let addon: ReturnType<typeof loadAddon> | undefined;
  try {
    const root = packageRoot();
    addon = loadAddon();
    caps = addon.capabilities();
    const file = addonFile(root);
    report.addon = { loaded: true, path: file.path, kind: file.kind };
  } catch (error) {
    report.addon = { loaded: false, error: error instanceof Error ? error.message : String(error) };
  }

  const cpu = caps?.cpu as (NativeCapabilities['cpu'] & { gemm?: unknown }) | undefined;
  if (cpu) {
    report.cpu.products = text(cpu.gemm) ?? text(cpu.blas);
    report.cpu.threads = typeof cpu.threads === 'number' ? cpu.threads : undefined;
  }

  const cuda = caps?.cuda as (NativeCapabilities['cuda'] & { driverVersion?: unknown; runtimeVersion?: unknown }) | undefined;
  const cublasLt = findSharedLibrary('libcublasLt', text(cuda?.cublas));
  report.cuda.cublasLt = cublasLt ? { found: true, path: cublasLt } : { found: false };
  report.cuda.driver = kernelDriverVersion();
  if (cuda) {
    report.cuda.compiled = cuda.compiled === true;
    report.cuda.available = cuda.available === true;
    if (text(cuda.reason)) report.cuda.reason = text(cuda.reason);
    report.cuda.runtime = text(cuda.runtimeVersion);
    report.cuda.driverCuda = text(cuda.driverVersion);
    report.cuda.cublas = text(cuda.cublas) ? { found: true, detail: text(cuda.cublas) } : { found: false };
    const names = Array.isArray(cuda.devices) ? cuda.devices : [];
    report.cuda.gpus = names.map((name, index) => {
      const gpu: DoctorReport['cuda']['gpus'][number] = { index, name: String(name) };
      if (report.cuda.available && addon) {
        const memory = addon.cudaMemoryInfo(index);
        if (memory.total > 0) Object.assign(gpu, { freeBytes: memory.free, totalBytes: memory.total });
      }
      return gpu;
    });
  }
  report.cuda.advice = cudaAdvice(report);
  return report;
}

/** One sentence of what to install for the GPU, or undefined when it is usable (or no binary loaded). */
function cudaAdvice(report: DoctorReport): string | undefined {
  if (!report.addon.loaded || report.cuda.available) return undefined;
  if (!report.cuda.compiled) {
    return 'this binary was built without CUDA: rebuild where the CUDA toolkit (nvcc) is installed (npm rebuild perceiver-io --build-from-source), or use the prebuilt binary';
  }
  if (!report.cuda.driver && !report.cuda.driverCuda) return 'install the NVIDIA driver (a GPU and its driver are needed for device "cuda")';
  if (!report.cuda.cublas.found || !report.cuda.cublasLt.found) {
    return "install CUDA's cuBLAS (libcublas.so.13 or .12 and libcublasLt, e.g. the libcublas-13-0 package from NVIDIA's repository, or pip's nvidia-cublas-cu12), and make it findable through LD_LIBRARY_PATH or set PERCEIVER_CUBLAS to libcublas.so";
  }
  return report.cuda.reason;
}

function gib(bytes: number): string {
  return `${(bytes / 2 ** 30).toFixed(1)} GiB`;
}

function humanBytes(bytes: number): string {
  if (bytes >= 2 ** 30) return gib(bytes);
  if (bytes >= 2 ** 20) return `${(bytes / 2 ** 20).toFixed(1)} MiB`;
  if (bytes >= 2 ** 10) return `${(bytes / 2 ** 10).toFixed(1)} KiB`;
  return `${bytes} B`;
}

export function formatDoctorReport(r: DoctorReport): string {
  const yes = (b: boolean) => (b ? 'yes' : 'no');
  const lines: string[] = [];
  lines.push(`node       ${r.node.version} (N-API ${r.node.napi ?? '?'}), ${r.node.platform}${r.node.glibc ? `, glibc ${r.node.glibc}` : ''}`);
  lines.push(
    r.addon.loaded
      ? `addon      ${r.addon.kind}: ${r.addon.path}`
      : `addon      NOT LOADED: ${(r.addon.error ?? '').split('\n').join('\n           ')}`,
  );
  const f = r.cpu.features;
  lines.push(`cpu        ${r.cpu.model ?? 'unknown model'}`);
  lines.push(`           AVX-512 ${f ? yes(f.avx512f) : '?'}, AVX2 ${f ? yes(f.avx2) : '?'}, FMA ${f ? yes(f.fma) : '?'}${r.cpu.threads ? `; ${r.cpu.threads} engine threads` : ''}`);
  if (r.cpu.products) lines.push(`           matrix products: ${r.cpu.products}`);
  lines.push(
    r.addon.loaded
      ? `cuda       compiled in: ${yes(r.cuda.compiled)}, usable: ${yes(r.cuda.available)}${r.cuda.reason ? ` (${r.cuda.reason})` : ''}`
      : 'cuda       unknown: the addon did not load',
  );
  const driver = r.cuda.driver || r.cuda.driverCuda ? `${r.cuda.driver ?? 'found'}${r.cuda.driverCuda ? ` (supports CUDA ${r.cuda.driverCuda})` : ''}` : 'not found';
  lines.push(`           driver: ${driver}; runtime linked in: ${r.cuda.runtime ? `CUDA ${r.cuda.runtime}` : 'unknown'}`);
  lines.push(`           cuBLAS: ${r.cuda.cublas.found ? r.cuda.cublas.detail : 'not loaded'}; cuBLASLt: ${r.cuda.cublasLt.found ? r.cuda.cublasLt.path : 'not found'}`);
  for (const gpu of r.cuda.gpus) {
    const memory = gpu.totalBytes ? `: ${gib(gpu.freeBytes ?? 0)} free of ${gib(gpu.totalBytes)}` : '';
    lines.push(`           cuda:${gpu.index} ${gpu.name}${memory}`);
  }
  if (r.cuda.compiled && r.cuda.gpus.length === 0) lines.push('           no GPU visible');
  if (r.cuda.advice) lines.push(`           to use a GPU: ${r.cuda.advice}`);
  lines.push(
    r.hubCache.exists
      ? `hub cache  ${r.hubCache.path}: ${humanBytes(r.hubCache.bytes)} in ${r.hubCache.models} model${r.hubCache.models === 1 ? '' : 's'}`
      : `hub cache  ${r.hubCache.path} (does not exist yet; set HF_HOME or HF_HUB_CACHE to move it)`,
  );
  return lines.join('\n');
}

/** `perceiver-io doctor` after its options are parsed (lib/cli/commands/doctor.ts). */
export async function runDoctorCommand(options: { json: boolean }): Promise<number> {
  const report = await doctorReport();
  process.stdout.write((options.json ? JSON.stringify(report, null, 2) : formatDoctorReport(report)) + '\n');
  return report.addon.loaded ? 0 : 1;
}
