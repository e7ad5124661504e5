/**
 * Benchmark entry point (`npm run bench`):
 *
 *   node dist/bench/run.js [--case NAME[,NAME...]] [--iterations N] [--batch 1,8] [--json FILE]
 *
 * Prints the machine, then one report per case. Exits 1 when a case fails (a wrong output, an
 * engine error), 2 on bad arguments. New cases (vision, optical flow, GPU) are entries of CASES.
 */
import { writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import { type BenchCase, type CaseReport, type MachineInfo, fmt, formatTable, machineInfo } from './common.js';
import { languageCpuCase } from './language_cpu.js';
import { opticalFlowCpuCase, visionLearnedCpuCase } from './heads_cpu.js';

export const CASES: readonly BenchCase[] = [languageCpuCase, visionLearnedCpuCase, opticalFlowCpuCase];

interface CliOptions {
  cases: BenchCase[];
  iterations: number;
  batches?: number[];
  json?: string;
}

class UsageError extends Error {}

const USAGE = `usage: node dist/bench/run.js [--case NAME[,NAME...]] [--iterations N] [--batch B[,B...]] [--json FILE]
cases: ${CASES.map((c) => c.name).join(', ')} (default: all)`;

function positiveInts(text: string, flag: string): number[] {
  const values = text.split(',').map((s) => s.trim());
  if (values.some((v) => !/^\d+$/.test(v) || Number(v) < 1)) throw new UsageError(`${flag} wants positive integers, got '${text}'`);
  return values.map(Number);
}

function parseCli(argv: string[]): CliOptions | 'help' {
  const { values } = parseArgs({
    args: argv,
    options: {
      case: { type: 'string' },
      iterations: { type: 'string' },
      batch: { type: 'string' },
      json: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.help) return 'help';
  let cases = [...CASES];
  if (values.case !== undefined) {
    cases = values.case.split(',').map((name) => {
      const found = CASES.find((c) => c.name === name.trim());
      if (!found) throw new UsageError(`unknown case '${name}'`);
      return found;
    });
  }
  const options: CliOptions = { cases, iterations: 3 };
  if (values.iterations !== undefined) options.iterations = positiveInts(values.iterations, '--iterations')[0]!;
  if (values.batch !== undefined) options.batches = positiveInts(values.batch, '--batch');
  if (values.json !== undefined) options.json = values.json;
  return options;
}

function header(m: MachineInfo): string {
  return [
    `perceiver-io benchmark, ${m.date}`,
    `cpu:    ${m.cpuModel}, ${m.cores} cores, ${fmt(m.memoryGiB, 1)} GiB, ${m.platform}`,
    `node:   ${m.node}`,
    `gemm:   own ${m.gemm} kernels (engine ${m.engineThreads} threads)`,
    `cuda:   ${m.cuda}`,
    `addon:  ${m.addon}`,
    `load:   ${m.loadAverage.map((x) => x.toFixed(2)).join(' ')} (1/5/15-min load average at start)`,
  ].join('\n');
}

function printReport(report: CaseReport): void {
  console.log(`\n== ${report.name}: ${report.description}`);
  for (const table of report.tables) console.log('\n' + formatTable(table));
  if (report.notes.length) console.log('\n' + report.notes.map((n) => `- ${n}`).join('\n'));
}

interface CaseOutcome {
  name: string;
  status: 'ok' | 'skipped' | 'failed';
  reason?: string;
  report?: CaseReport;
}

async function main(): Promise<number> {
  let cli: CliOptions | 'help';
  try {
    cli = parseCli(process.argv.slice(2));
  } catch (error) {
    console.error(`${(error as Error).message}\n${USAGE}`);
    return 2;
  }
  if (cli === 'help') {
    console.log(USAGE);
    return 0;
  }

  let machine: MachineInfo;
  try {
    machine = machineInfo(); // loads the native addon
  } catch (error) {
    console.error(error instanceof Error ? error.message : String(error));
    return 1;
  }
  console.log(header(machine));
  const log = (line: string): void => {
    process.stderr.write(`  [${new Date().toISOString().slice(11, 19)}] ${line}\n`);
  };

  const outcomes: CaseOutcome[] = [];
  for (const c of cli.cases) {
    const reason = c.unavailable();
    if (reason !== undefined) {
      console.log(`\n== ${c.name}: skipped (${reason})`);
      outcomes.push({ name: c.name, status: 'skipped', reason });
      continue;
    }
    log(`case ${c.name}`);
    try {
      const options = { iterations: cli.iterations, log, ...(cli.batches ? { batches: cli.batches } : {}) };
      const report = await c.run(options);
      printReport(report);
      outcomes.push({ name: c.name, status: 'ok', report });
    } catch (error) {
      const message = error instanceof Error ? (error.stack ?? error.message) : String(error);
      console.log(`\n== ${c.name}: FAILED\n${message}`);
      outcomes.push({ name: c.name, status: 'failed', reason: message });
    }
  }

  const loadAtEnd = loadavg();
  console.log(`\nload:   ${loadAtEnd.map((x) => x.toFixed(2)).join(' ')} (1/5/15-min load average at the end, this run's own threads included)`);

  if (cli.json !== undefined) {
    const json = {
      machine,
      loadAverageAtEnd: loadAtEnd,
      iterations: cli.iterations,
      cases: outcomes.map((o) => ({ name: o.name, status: o.status, reason: o.reason, metrics: o.report?.metrics })),
    };
    writeFileSync(cli.json, JSON.stringify(json, null, 2) + '\n');
    log(`wrote ${cli.json}`);
  }
  return outcomes.some((o) => o.status === 'failed') ? 1 : 0;
}

process.exitCode = await main();
