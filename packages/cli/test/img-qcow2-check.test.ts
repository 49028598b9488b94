/**
 * `diskhub img check` on qcow2 side by side with qemu-img: the same report (human, json, -q)
 * and exit code on clean and damaged copies (a leaked cluster, a refcount of zero, an L2 entry
 * past the end of the file, an unaligned data cluster, a missing COPIED flag, a COPIED flag on a
 * cluster shared with a snapshot), and repairs
 * (-r leaks, -r all) that leave the image as qemu-img's own repair would.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { needs, tempDir, qemuImg, qemuIo, run, diskhub } from '@diskhub/testkit';
import { both } from './peer.js';

test('qcow2 check: same findings, reports and exit codes as qemu-img on damaged copies; -r repairs', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  const base = join(dir, 'clean.qcow2');
  await qemuImg('create', '-q', '-f', 'qcow2', base, '1M');
  await qemuIo('-c', 'write -P 1 0 64k', base);
  // 64k clusters: header 0, refcount table 1, refcount block 2, L1 3, L2 4, data 5.
  const clean = await readFile(base);
  const leak = Buffer.alloc(clean.length + 65536);
  clean.copy(leak);
  leak.writeUInt16BE(1, 0x20000 + 2 * 6);
  const zeroRef = Buffer.from(clean);
  zeroRef.writeUInt16BE(0, 0x20000 + 2 * 5);
  const l2PastEnd = Buffer.from(clean);
  l2PastEnd.writeBigUInt64BE(0x8000000000000000n | 0x7f0000n, 0x40000 + 8); // L2 entry 1 → far past EOF
  const unaligned = Buffer.from(clean);
  unaligned.writeBigUInt64BE(0x8000000000000000n | 0x50200n, 0x40000 + 8);
  const noCopied = Buffer.from(clean);
  noCopied.writeBigUInt64BE(0x50000n, 0x40000);
  // A COPIED flag where the refcount is 2: the data cluster is shared with a snapshot.
  const snap = join(dir, 'snap-base.qcow2');
  await copyFile(base, snap);
  await qemuImg('snapshot', '-c', 's1', snap);
  const extraCopied = await readFile(snap);
  extraCopied.writeBigUInt64BE(0x8000000000000000n | extraCopied.readBigUInt64BE(0x40000), 0x40000);
  const cases: [string, Buffer][] = [['clean', clean], ['leak', leak], ['zeroref', zeroRef], ['l2past', l2PastEnd], ['unaligned', unaligned], ['nocopied', noCopied], ['extracopied', extraCopied]];
  for (const [name, bytes] of cases) {
    for (const flags of [[], ['--output=json'], ['-q']]) {
      await writeFile(join(dir, `${name}.qcow2`), bytes);
      const { ours, peer } = await both(['check', ...flags, `${name}.qcow2`], dir);
      assert.equal(ours.stdout, peer.stdout, `stdout of check ${flags.join(' ')} ${name}`);
      assert.equal(ours.code, peer.code, `exit of check ${flags.join(' ')} ${name}`);
    }
    for (const repair of ['leaks', 'all']) {
      await writeFile(join(dir, `${name}.qcow2`), bytes);
      await copyFile(join(dir, `${name}.qcow2`), join(dir, `${name}-peer.qcow2`));
      const ours = await diskhub(['img', 'check', '-r', repair, `${name}.qcow2`], { cwd: dir });
      const peer = await run('qemu-img', ['check', '-r', repair, `${name}-peer.qcow2`], { cwd: dir });
      assert.equal(ours.code, peer.code, `exit of check -r ${repair} ${name}: ${ours.stdout}${ours.stderr}`);
      const after = await run('qemu-img', ['check', join(dir, `${name}.qcow2`)]);
      const afterPeer = await run('qemu-img', ['check', join(dir, `${name}-peer.qcow2`)]);
      assert.equal(after.code, afterPeer.code, `qemu-img check after our -r ${repair} on ${name}: ${after.stdout}`);
    }
  }
});

