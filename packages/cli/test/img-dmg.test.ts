/**
 * `diskhub img` on dmg images (crafted by testkit's UDIF writer) side by side with qemu-img
 * 7.2: info, check, map and compare print the same; convert out of a dmg gives what qemu-img
 * compare calls identical; measure agrees where there are no zero chunks (diskhub knows that
 * zero and ignore chunks store nothing, QEMU counts them as data); create is refused.
 *
 * stderr is not compared: Debian's qemu-img prints notes about its missing dmg-bz2 and
 * dmg-lzfse modules on every dmg it opens.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { buildDmg, dmgPattern, diskhub, needs, qemuImg, run, tempDir } from '@diskhub/testkit';
import { both } from './peer.js';

const S = 512;

async function sameOutput(args: string[], dir: string): Promise<string> {
  const { ours, peer } = await both(args, dir);
  assert.equal(ours.stdout, peer.stdout, `stdout of '${args.join(' ')}'`);
  assert.equal(ours.code, peer.code, `exit code of '${args.join(' ')}': ${ours.stderr}`);
  return ours.stdout;
}

test('dmg: info, check, map, compare, measure and convert as qemu-img; create refused', needs('qemu-img'), async (t) => {
  const dir = await tempDir(t);
  await writeFile(join(dir, 'holes.dmg'), buildDmg({
    partitions: [
      [{ kind: 'raw', sectors: 3, data: dmgPattern(3 * S, 1) }, { kind: 'zlib', sectors: 900, data: dmgPattern(900 * S, 2) }, { kind: 'zero', sectors: 3000 }],
      [{ kind: 'ignore', sectors: 11 }, { kind: 'zlib', sectors: 20, data: dmgPattern(20 * S, 3) }],
    ],
  }).bytes);
  await writeFile(join(dir, 'full.dmg'), buildDmg({
    partitions: [[{ kind: 'zlib', sectors: 2048, data: dmgPattern(2048 * S, 4) }, { kind: 'raw', sectors: 5, data: dmgPattern(5 * S, 5) }]],
    tables: 'resource-fork',
  }).bytes);
  for (const f of ['holes.dmg', 'full.dmg']) {
    await sameOutput(['info', f], dir);
    await sameOutput(['info', '--output=json', f], dir);
    await sameOutput(['check', f], dir);
    await sameOutput(['map', f], dir);
    await sameOutput(['compare', f, f], dir);
    const r = await diskhub(['img', 'convert', '-O', 'qcow2', f, `${f}.qcow2`], { cwd: dir });
    assert.equal(r.code, 0, r.stderr);
    const cmp = await run('qemu-img', ['compare', '-f', 'dmg', f, `${f}.qcow2`], { cwd: dir });
    assert.equal(cmp.code, 0, `${f}: ${cmp.stdout}${cmp.stderr}`);
    await qemuImg('check', join(dir, `${f}.qcow2`));
  }
  // Without zero chunks every byte is data for both; with them diskhub's map and measure skip the holes.
  await sameOutput(['map', '--output=json', 'full.dmg'], dir);
  await sameOutput(['measure', '-O', 'qcow2', '--output=json', 'full.dmg'], dir);
  const { ours, peer } = await both(['measure', '-O', 'qcow2', '--output=json', 'holes.dmg'], dir);
  assert.ok(JSON.parse(ours.stdout).required < JSON.parse(peer.stdout).required, `measure of zero chunks: ${ours.stdout} vs ${peer.stdout}`);
  const map = JSON.parse((await diskhub(['img', 'map', '--output=json', 'holes.dmg'], { cwd: dir })).stdout) as { start: number; length: number; data: boolean; zero: boolean }[];
  assert.deepEqual(map.map((e) => [e.start / S, e.length / S, e.data, e.zero]), [[0, 903, true, false], [903, 3011, false, true], [3914, 20, true, false]]);

  const create = await diskhub(['img', 'create', '-f', 'dmg', 'new.dmg', '1M'], { cwd: dir });
  assert.equal(create.code, 1);
  assert.match(create.stderr, /Format driver 'dmg' does not support image creation/);
});
