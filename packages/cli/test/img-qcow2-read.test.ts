/**
 * `diskhub img` reading qcow2, side by side with qemu-img on the same files: info (human,
 * json, --backing-chain), map, compare, convert -O raw and -l snapshots, on a corpus made by
 * qemu-img and qemu-io (every cluster size, v2 and v3, extended L2, lazy refcounts, zlib and
 * zstd compression, a three-level backing chain, internal snapshots).
 */
import test from 'node:test';
import assert from 'node:assert/strict';

import { join } from 'node:path';

import { needs, tempDir, qemuIo, run, diskhub } from '@diskhub/testkit';
import { assertSame } from './peer.js';


/** A corpus of qcow2 images made by qemu-img / qemu-io, named by what they exercise. */
async function corpus(dir: string): Promise<string[]> {
  const opt = { cwd: dir };
  const made: string[] = [];
  const mk = async (name: string, opts: string, size: string, io: string[] = []) => {
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', ...(opts ? ['-o', opts] : []), name, size], opt);
    if (io.length) await qemuIo('-f', 'qcow2', ...io.flatMap((c) => ['-c', c]), join(dir, name));
    made.push(name);
  };
  const pattern = ['write -P 0x11 0 64k', 'write -P 0x22 1M 1536k', 'write -z 4M 128k', 'write -P 0x33 5M 4k', 'discard 1M 64k'];
  await mk('c64k.qcow2', '', '16M', pattern);
  await mk('c512.qcow2', 'cluster_size=512', '3M', pattern.slice(0, 2));
  await mk('c4k-v2.qcow2', 'cluster_size=4k,compat=0.10', '16M', pattern);
  await mk('c2m.qcow2', 'cluster_size=2M', '20M', pattern);
  await mk('extl2.qcow2', 'extended_l2=on,cluster_size=64k', '16M', ['write -P 0x44 4k 8k', 'write -z 64k 4k', 'write -P 5 1M 100k']);
  await mk('lazy.qcow2', 'lazy_refcounts=on', '16M', pattern);
  await mk('odd.qcow2', '', '1000000', ['write -P 9 999424 512']);
  await mk('empty.qcow2', '', '1G');
  // Compressed (zlib and zstd) by qemu-img convert -c from a raw pattern.
  await run('qemu-img', ['create', '-q', '-f', 'raw', 'pat.raw', '8M'], opt);
  await qemuIo('-f', 'raw', '-c', 'write -P 0x61 0 3M', '-c', 'write -P 0 3M 1M', '-c', 'write -P 0x62 6M 100k', join(dir, 'pat.raw'));
  await run('qemu-img', ['convert', '-c', '-O', 'qcow2', 'pat.raw', 'zlib.qcow2'], opt);
  await run('qemu-img', ['convert', '-c', '-O', 'qcow2', '-o', 'compression_type=zstd', 'pat.raw', 'zstd.qcow2'], opt);
  made.push('zlib.qcow2', 'zstd.qcow2');
  // A three-image chain with data at every level, and an internal snapshot.
  await mk('base.qcow2', '', '16M', ['write -P 1 0 4M']);
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', 'mid.qcow2'], opt);
  await qemuIo('-f', 'qcow2', '-c', 'write -P 2 1M 1M', '-c', 'write -z 3M 64k', join(dir, 'mid.qcow2'));
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'mid.qcow2', '-F', 'qcow2', 'top.qcow2'], opt);
  await qemuIo('-f', 'qcow2', '-c', 'write -P 3 1536k 64k', join(dir, 'top.qcow2'));
  made.push('mid.qcow2', 'top.qcow2');
  await mk('snap.qcow2', '', '8M', ['write -P 7 0 1M']);
  await run('qemu-img', ['snapshot', '-c', 'before', 'snap.qcow2'], opt);
  await qemuIo('-f', 'qcow2', '-c', 'write -P 8 0 512k', join(dir, 'snap.qcow2'));
  return made;
}

test('qcow2 info / map / compare / convert -O raw agree with qemu-img on the corpus', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  for (const f of await corpus(dir)) {
    await assertSame(['info', f], dir);
    await assertSame(['info', '--output=json', f], dir);
    await assertSame(['info', '--output=json', '--backing-chain', f], dir);
    await assertSame(['map', '--output=json', f], dir);
    await assertSame(['map', f], dir);
    await assertSame(['compare', f, f], dir);
    const raw = `${f}.raw`;
    const r = await diskhub(['img', 'convert', '-O', 'raw', f, raw], { cwd: dir });
    assert.equal(r.code, 0, `${f}: ${r.stderr}`);
    await assertSame(['compare', '-f', 'qcow2', '-F', 'raw', f, raw], dir);
  }
  await assertSame(['compare', 'c64k.qcow2', 'lazy.qcow2'], dir);
  await assertSame(['compare', 'c64k.qcow2', 'c4k-v2.qcow2'], dir);
  await assertSame(['compare', 'top.qcow2', 'mid.qcow2'], dir);
  await assertSame(['compare', '-s', 'zlib.qcow2', 'zstd.qcow2'], dir);
  await assertSame(['convert', '-O', 'raw', '-l', 'snapshot.name=before', 'snap.qcow2', 'snap-before.raw'], dir);
  await assertSame(['compare', '-F', 'raw', 'c64k.qcow2', 'snap-before.raw'], dir);
  await assertSame(['convert', '-l', 'nope', 'snap.qcow2', 'x.raw'], dir);
  await assertSame(['info', '-f', 'qcow2', 'pat.raw'], dir);
  await assertSame(['snapshot', '-l', 'snap.qcow2'], dir);
  await assertSame(['snapshot', 'c64k.qcow2'], dir);
});


test('qcow2 with an external data file: refused without DISKHUB_ALLOW_EXTERNAL_DATA=1, read like qemu-img with it', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  const img = join(dir, 'df.qcow2');
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', `data_file=${join(dir, 'df.data')}`, img, '4M']);
  await qemuIo('-f', 'qcow2', '-c', 'write -P 7 0 1M', img);
  const refused = await diskhub(['img', 'info', img]);
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /external file .*df\.data.*DISKHUB_ALLOW_EXTERNAL_DATA=1/);
  const env = { ...process.env, DISKHUB_ALLOW_EXTERNAL_DATA: '1' };
  const ours = await diskhub(['img', 'info', '--output=json', img], { env });
  const peer = await run('qemu-img', ['info', '--output=json', img]);
  assert.equal(ours.stdout, peer.stdout);
  const out = join(dir, 'out.raw');
  assert.equal((await diskhub(['img', 'convert', '-O', 'raw', img, out], { env })).code, 0);
  assert.equal((await run('qemu-img', ['compare', '-F', 'raw', img, out])).code, 0);
});

test('qcow2 persistent bitmaps: info and check as qemu-img; writing keeps them (contents: img-qcow2-bitmaps-write.test.ts)', needs('qemu-img'), async (t) => {
  const dir = await tempDir(t);
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', 'bm.qcow2', '64M'], { cwd: dir });
  await run('qemu-img', ['bitmap', '--add', 'bm.qcow2', 'b0'], { cwd: dir });
  await run('qemu-img', ['bitmap', '--add', '-g', '128k', '--disable', 'bm.qcow2', 'b1'], { cwd: dir });
  await assertSame(['info', 'bm.qcow2'], dir);
  await assertSame(['info', '--output=json', 'bm.qcow2'], dir);
  await assertSame(['check', 'bm.qcow2'], dir);
  const { openImage, closeChain } = await import('@diskhub/disk');
  const img = await openImage(join(dir, 'bm.qcow2'), { writable: true });
  try { await img.write!(new Uint8Array(4096).fill(1), 0); } finally { await closeChain(img); }
  const info = JSON.parse((await run('qemu-img', ['info', '--output=json', join(dir, 'bm.qcow2')])).stdout);
  assert.deepEqual(info['format-specific'].data.bitmaps, [
    { flags: ['auto'], name: 'b0', granularity: 65536 },
    { flags: [], name: 'b1', granularity: 131072 },
  ], 'bitmaps still listed, consistent (not in use) after close');
  assert.equal((await run('qemu-img', ['check', join(dir, 'bm.qcow2')])).code, 0);
});
