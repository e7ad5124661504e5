/**
 * Per-command help: every command's --help lists every option its table parses (the check is
 * derived from the tables in lib/cli/commands/), --help exits 0, a usage error exits 2 with one
 * line pointing at the command's --help, and no arguments print the command list on stderr.
 */
import t from 'tap';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { COMMANDS } from '../lib/cli/commands/index.js';
import { REPO } from './helpers/fixtures.js';

const BIN = join(REPO, JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')).bin['perceiver-io']);

function cli(args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 60_000 }, (error, stdout, stderr) => {
      resolve({ status: error ? (typeof error.code === 'number' ? error.code : null) : 0, stdout, stderr });
    });
  });
}

t.test('the command list names every command, one line each', async (t) => {
  const help = await cli(['--help']);
  t.equal(help.status, 0, '--help exits 0');
  t.equal(help.stderr, '', 'nothing on stderr');
  for (const { spec } of COMMANDS) {
    const lines = help.stdout.split('\n').filter((line) => line.startsWith(`  ${spec.name} `));
    t.equal(lines.length, 1, `${spec.name}: one line`);
    t.match(lines[0] ?? '', spec.summary, `${spec.name}: its summary`);
  }
  const none = await cli([]);
  t.equal(none.status, 2, 'no arguments: exit 2');
  t.equal(none.stdout, '', 'no arguments: nothing on stdout');
  t.equal(none.stderr, help.stdout, 'no arguments: the command list on stderr');
  const named = await cli(['help', 'embed']);
  t.equal(named.status, 0, 'help embed: exit 0');
  t.equal(named.stdout, (await cli(['embed', '--help'])).stdout, 'help embed is embed --help');
  const unknown = await cli(['explode']);
  t.equal(unknown.status, 2);
  t.match(unknown.stderr, /^perceiver-io: unknown command "explode" \(see perceiver-io --help\)\n$/);
});

for (const { spec } of COMMANDS) {
  t.test(`${spec.name} --help`, async (t) => {
    // Every option of the table given at once, with --help: the parser must accept each one (so
    // the table parses what the help prints), and the help wins.
    const every = Object.entries(spec.options).flatMap(([name, o]) => (o.type === 'string' ? [`--${name}`, 'x'] : [`--${name}`]));
    const [help, usage] = await Promise.all([cli([spec.name, ...every, '--help']), cli([spec.name, '--no-such-option'])]);
    t.equal(help.status, 0, `exit 0 (stderr: ${help.stderr.trim()})`);
    t.equal(help.stderr, '', 'nothing on stderr');
    t.match(help.stdout, new RegExp(`^Usage: perceiver-io ${spec.name}\\b`), 'starts with its usage');
    for (const [name, o] of Object.entries(spec.options)) {
      const line = help.stdout.split('\n').find((l) => new RegExp(`^  (-\\w, )?--${name}\\b`).test(l));
      t.ok(line, `lists --${name}`);
      if (o.default !== undefined) t.match(help.stdout, `(default ${o.default})`, `--${name}: shows its default`);
    }
    t.match(help.stdout, /^ {2}-h, --help/m, 'lists --help');

    t.equal(usage.status, 2, 'an unknown option: exit 2');
    t.equal(usage.stdout, '', 'an unknown option: nothing on stdout');
    t.match(usage.stderr, new RegExp(`^perceiver-io: ${spec.name}: .*no-such-option.* \\(see perceiver-io ${spec.name} --help\\)\\n$`), 'one line pointing at the command\'s --help');

    const required = Object.entries(spec.options).filter(([, o]) => o.required);
    if (required.length > 0) {
      const missing = await cli([spec.name]);
      t.equal(missing.status, 2, 'a required option missing: exit 2');
      t.match(missing.stderr, new RegExp(`^perceiver-io: ${spec.name} needs --${required[0]![0]} \\(see perceiver-io ${spec.name} --help\\)\\n$`));
    }
  });
}
