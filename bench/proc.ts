/**
 * Linux /proc readers the load benchmarks share (serve_load.ts, hostile_load.ts, scale.ts): a child's
 * resident set and CPU time, and the whole machine's busy time, so a report can say how much of
 * the CPU each party had. Each returns NaN where /proc is missing.
 */
import { readFileSync } from 'node:fs';

/** The process's resident set in MiB. */
export function rssMiB(pid: number): number {
  try {
    const match = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return match ? Number(match[1]) / 1024 : NaN;
  } catch {
    return NaN;
  }
}

/**
 * CPU seconds (user + system, all threads) a process has used: /proc/<pid>/stat fields 14 and 15,
 * in clock ticks of 1/100 s (USER_HZ is 100 on every Linux Node supports). With `tid`, those of
 * that one thread (/proc/<pid>/task/<tid>/stat; the main thread's tid is the pid).
 */
export function processCpuSeconds(pid: number, tid?: number): number {
  try {
    const stat = readFileSync(tid === undefined ? `/proc/${pid}/stat` : `/proc/${pid}/task/${tid}/stat`, 'utf8');
    // The command name (field 2) may hold spaces: count from after its closing parenthesis.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return NaN;
  }
}

/**
 * Busy CPU seconds of the whole machine so far (all cores: /proc/stat's first line, everything but
 * idle and iowait; steal included, as it is time this VM could not run), in ticks of 1/100 s.
 */
export function machineBusySeconds(): number {
  try {
    const fields = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!.trim().split(/\s+/).slice(1, 9).map(Number);
    const [user, nice, system, , , irq, softirq, steal] = fields as [number, number, number, number, number, number, number, number];
    return (user + nice + system + irq + softirq + steal) / 100;
  } catch {
    return NaN;
  }
}
