/**
 * Every module of the engine loads on its own, first, through the package's `exports` (as a
 * user importing `@diskhub/disk/qcow2/index` does). An import cycle through the format
 * registry made such an import throw "Cannot access 'qcow2Driver' before initialization";
 * within one process the module cache hides that, so each import runs in a fresh `node`.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readdir } from 'node:fs/promises';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);
const srcDir = join(dirname(fileURLToPath(import.meta.url)), '..', 'src');

async function modules(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await modules(p)));
    else if (e.name.endsWith('.js')) out.push(relative(srcDir, p).slice(0, -'.js'.length));
  }
  return out.sort();
}

test('every engine module imports on its own in a fresh process (no import cycle bites)', async () => {
  const specifiers = (await modules(srcDir)).map((m) => `@diskhub/disk/${m}`);
  // Every driver folder is among them (the case the cycle broke).
  for (const fmt of ['raw', 'qcow2', 'qcow1', 'vmdk', 'vpc', 'vhdx', 'vdi', 'qed', 'luks', 'ova', 'dmg', 'parallels', 'bochs', 'cloop']) {
    assert.ok(specifiers.includes(`@diskhub/disk/${fmt}/index`), fmt);
  }
  const failures: string[] = [];
  const queue = [...specifiers];
  // A few at a time: each is a node start (~50 ms).
  await Promise.all(Array.from({ length: 4 }, async () => {
    for (let s = queue.shift(); s !== undefined; s = queue.shift()) {
      try {
        await run(process.execPath, ['--input-type=module', '-e', `await import(${JSON.stringify(s)});`], { cwd: srcDir });
      } catch (e) {
        failures.push(`${s}: ${(e as { stderr?: string }).stderr?.split('\n').find((l) => /Error/.test(l)) ?? String(e)}`);
      }
    }
  }));
  assert.deepEqual(failures, []);
});
