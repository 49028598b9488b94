/**
 * Writing qcow2 in place: random sequences of writes, write-zeroes and discards through our
 * driver, mirrored onto a raw reference; afterwards `qemu-img check` finds no error and no
 * leak, and `qemu-img compare` finds the image equal to the reference. Covers new images of
 * every shape, images made by qemu-img with data (compressed clusters, snapshots sharing
 * clusters, backing files), and refcount tables that must grow.
 */
import test from 'node:test';
import { spawnSync } from 'node:child_process';
import assert from 'node:assert/strict';
import { copyFile, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { openImage, closeChain, checkSource, FileSource, type Image } from '@diskhub/disk';
import { tempDir, qemuImg, qemuIo, needs, run } from '@diskhub/testkit';

/** A small deterministic PRNG, so a failure can be replayed. */
function prng(seed: number): (n: number) => number {
  let x = seed >>> 0 || 1;
  return (n) => { x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0; return x % n; };
}

interface Scenario {
  name: string;
  create: string[];
  size: number;
  ops: number;
  /** Prepare the image (and the reference's initial contents) with qemu-io before our writes. */
  prepare?: (img: string, dir: string) => Promise<void>;
  backing?: boolean;
  discard?: boolean;
}

async function clusterSizeOf(path: string): Promise<number> {
  return JSON.parse(await qemuImg('info', '--output=json', path))['cluster-size'];
}

async function runScenario(dir: string, s: Scenario): Promise<void> {
  const img = join(dir, `${s.name}.qcow2`);
  const ref = join(dir, `${s.name}.raw`);
  await qemuImg('create', '-q', '-f', 'qcow2', ...s.create, img, String(s.size));
  if (s.prepare) await s.prepare(img, dir);
  // The reference starts as what qemu-img reads from the prepared image.
  await qemuImg('convert', '-O', 'raw', img, ref);
  const cs = await clusterSizeOf(img);
  const rand = prng(s.name.length * 7919 + s.size);
  const reference = new Uint8Array(await readFile(ref));
  const image: Image = await openImage(img, { writable: true });
  try {
    for (let i = 0; i < s.ops; i++) {
      const kind = rand(10);
      const offset = rand(4) === 0 ? rand(s.size / cs) * cs : rand(s.size - 1);
      const length = Math.min(s.size - offset, 1 + (rand(3) === 0 ? rand(4 * cs) : rand(cs + 600)));
      if (kind < 6) {
        const data = new Uint8Array(length).fill(1 + rand(255));
        data[0] = i & 0xff;
        await image.write!(data, offset);
        reference.set(data, offset);
      } else if (kind < 8 || !s.discard) {
        await image.writeZeroes!(offset, length, { mayUnmap: rand(2) === 0 });
        reference.fill(0, offset, offset + length);
      } else {
        // Discard whole clusters only: what a partial discard leaves is unspecified.
        const start = Math.ceil(offset / cs) * cs;
        const end = Math.floor((offset + length) / cs) * cs;
        if (end > start) {
          await image.discard!(start, end - start);
          reference.fill(0, start, end);
        }
      }
      if (i % 50 === 49) await image.flush!();
    }
  } finally {
    await closeChain(image);
  }
  await writeFile(ref, reference);
  const check = await run('qemu-img', ['check', img]);
  assert.equal(check.code, 0, `${s.name}: qemu-img check:\n${check.stdout}${check.stderr}`);
  assert.doesNotMatch(check.stdout, /leaked/i, `${s.name}: leaks`);
  // Our own check agrees with qemu-img's.
  const src = await FileSource.open(img, { readOnly: true });
  try {
    const ours = await checkSource(src, { format: 'qcow2' });
    assert.deepEqual([ours.corruptions, ours.leaks, ours['check-errors']], [0, 0, 0], `${s.name}: ${ours.messages.join('\n')}`);
    const peer = JSON.parse((await run('qemu-img', ['check', '--output=json', img])).stdout);
    assert.equal(ours['image-end-offset'], peer['image-end-offset'], `${s.name}: image end offset`);
    assert.equal(ours['allocated-clusters'] ?? 0, peer['allocated-clusters'] ?? 0, `${s.name}: allocated clusters`);
    assert.equal(ours['fragmented-clusters'] ?? 0, peer['fragmented-clusters'] ?? 0, `${s.name}: fragmented clusters`);
  } finally {
    await src.close();
  }
  const cmp = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'qcow2', ref, img]);
  assert.equal(cmp.code, 0, `${s.name}: qemu-img compare: ${cmp.stdout}${cmp.stderr}`);
}

test('qcow2 write: random writes, zeroes and discards on new images of every shape', needs('qemu-img'), async (t) => {
  const dir = await tempDir(t);
  const scenarios: Scenario[] = [
    { name: 'default', create: [], size: 8 << 20, ops: 300, discard: true },
    { name: 'v2', create: ['-o', 'compat=0.10,cluster_size=4k'], size: 4 << 20, ops: 300 },
    { name: 'extl2', create: ['-o', 'extended_l2=on,cluster_size=64k'], size: 8 << 20, ops: 300, discard: true },
    { name: 'tiny-clusters', create: ['-o', 'cluster_size=512,refcount_bits=1'], size: 2 << 20, ops: 400, discard: true },
    { name: 'wide-refcounts', create: ['-o', 'cluster_size=1k,refcount_bits=64'], size: 3 << 20, ops: 300, discard: true },
    { name: 'lazy', create: ['-o', 'lazy_refcounts=on,cluster_size=16k'], size: 5 << 20, ops: 200, discard: true },
    { name: 'prealloc', create: ['-o', 'preallocation=metadata,cluster_size=8k'], size: 3 << 20, ops: 200, discard: true },
    { name: 'odd-size', create: ['-o', 'cluster_size=4k'], size: 3_000_000 - 3_000_000 % 512, ops: 200, discard: true },
  ];
  for (const s of scenarios) await runScenario(dir, s);
});

test('qcow2 write: over data written by qemu-io, compressed clusters and a backing file', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  await runScenario(dir, {
    name: 'qemu-data', create: ['-o', 'cluster_size=16k'], size: 6 << 20, ops: 250, discard: true,
    prepare: (img) => qemuIo('-f', 'qcow2', '-c', 'write -P 0x41 0 2M', '-c', 'write -z 2M 1M', '-c', 'write -P 0x42 5M 1M', img).then(() => undefined),
  });
  await runScenario(dir, {
    name: 'compressed', create: [], size: 4 << 20, ops: 200, discard: true,
    prepare: async (img, d) => {
      const raw = join(d, 'pattern.raw');
      await qemuImg('create', '-q', '-f', 'raw', raw, String(4 << 20));
      await qemuIo('-f', 'raw', '-c', 'write -P 0x61 0 3M', raw);
      await qemuImg('convert', '-c', '-f', 'raw', '-O', 'qcow2', raw, img);
    },
  });
  const base = join(dir, 'base.qcow2');
  await qemuImg('create', '-q', '-f', 'qcow2', base, String(4 << 20));
  await qemuIo('-f', 'qcow2', '-c', 'write -P 0x77 0 4M', base);
  for (const [name, extra] of [['on-backing', []], ['on-backing-extl2', ['-o', 'extended_l2=on']], ['on-backing-v2', ['-o', 'compat=0.10']]] as const) {
    await runScenario(dir, { name, create: ['-b', base, '-F', 'qcow2', ...extra], size: 4 << 20, ops: 250, discard: name !== 'on-backing-v2' });
  }
});

test('qcow2 write: clusters shared with an internal snapshot are copied, the snapshot keeps its view', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  await runScenario(dir, {
    name: 'snapshotted', create: ['-o', 'cluster_size=8k'], size: 4 << 20, ops: 250, discard: true,
    prepare: async (img, d) => {
      await qemuIo('-f', 'qcow2', '-c', 'write -P 0x31 0 4M', img);
      await qemuImg('snapshot', '-c', 'keep', img);
      await qemuImg('convert', '-O', 'raw', img, join(d, 'before.raw'));
    },
  });
  await qemuImg('convert', '-l', 'keep', '-O', 'raw', join(dir, 'snapshotted.qcow2'), join(dir, 'after.raw'));
  assert.ok((await readFile(join(dir, 'after.raw'))).equals(await readFile(join(dir, 'before.raw'))), 'the snapshot view changed');
});

test('qcow2 write: a full refcount table grows (512-byte clusters, 64-bit refcounts)', needs('qemu-img'), async (t) => {
  const dir = await tempDir(t);
  const img = join(dir, 'grow.qcow2');
  await qemuImg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=512,refcount_bits=64', img, String(64 << 20));
  const before = JSON.parse(await qemuImg('check', '--output=json', img));
  const image = await openImage(img, { writable: true });
  const chunk = new Uint8Array(1 << 20).fill(0x5c);
  try {
    // One refcount block covers 64 clusters (32 KiB) and the first table 64 blocks: 2 MiB.
    for (let off = 0; off < 12 << 20; off += chunk.length) await image.write!(chunk, off);
  } finally {
    await closeChain(image);
  }
  const check = await run('qemu-img', ['check', '--output=json', img]);
  assert.equal(check.code, 0, check.stdout);
  assert.ok(JSON.parse(check.stdout)['image-end-offset'] > before['image-end-offset']);
  const peer = await run('qemu-img', ['compare', '-f', 'qcow2', img, '-F', 'raw', await (async () => {
    const raw = join(dir, 'ref.raw');
    const b = new Uint8Array(64 << 20);
    b.fill(0x5c, 0, 12 << 20);
    await writeFile(raw, b);
    return raw;
  })()]);
  assert.equal(peer.code, 0, peer.stdout);
  await copyFile(img, join(dir, 'copy.qcow2'));
});

test('qcow2 write: an image left dirty by a crash with lazy refcounts is repaired on opening for writing', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  const img = join(dir, 'dirty.qcow2');
  await qemuImg('create', '-q', '-f', 'qcow2', '-o', 'lazy_refcounts=on', img, '8M');
  // qemu-io killed mid-session: lazy refcounts were never written, the dirty bit stays set.
  const killed = spawnSync('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x42 0 3M', '-c', 'sigraise 9', img]);
  assert.equal(killed.signal, 'SIGKILL');
  const before = JSON.parse(await qemuImg('info', '--output=json', img));
  assert.equal(before['dirty-flag'], true, 'the crash left the image dirty');
  const image = await openImage(img, { writable: true });
  try {
    await image.write!(new Uint8Array(65536).fill(0x43), 4 << 20);
  } finally {
    await closeChain(image);
  }
  const check = await run('qemu-img', ['check', img]);
  assert.equal(check.code, 0, check.stdout + check.stderr);
  const after = JSON.parse(await qemuImg('info', '--output=json', img));
  assert.equal(after['dirty-flag'], false);
  const raw = join(dir, 'dirty.raw');
  await qemuImg('convert', '-O', 'raw', img, raw);
  const bytes = await readFile(raw);
  assert.ok(bytes.subarray(0, 3 << 20).every((b) => b === 0x42) && bytes.subarray(4 << 20, (4 << 20) + 65536).every((b) => b === 0x43));
});

test('qcow2 write: concurrent small writes into the same new clusters all land', needs('qemu-img'), async (t) => {
  const dir = await tempDir(t);
  for (const opts of [[], ['-o', 'extended_l2=on'], ['-o', 'cluster_size=4k']]) {
    const img = join(dir, 'concurrent.qcow2');
    await qemuImg('create', '-q', '-f', 'qcow2', ...opts, img, String(1 << 20));
    const reference = new Uint8Array(1 << 20);
    const image = await openImage(img, { writable: true });
    const rand = prng(opts.length + 99);
    try {
      for (let round = 0; round < 8; round++) {
        // Many writes in flight at once, several into the same cluster, none overlapping.
        const slots = new Set<number>();
        while (slots.size < 48) slots.add(rand(256));
        await Promise.all([...slots].map(async (slot) => {
          const data = new Uint8Array(4096).fill(1 + ((slot + round) % 250));
          reference.set(data, slot * 4096);
          await image.write!(data, slot * 4096);
        }));
        if (round === 3) await image.writeZeroes!(64 << 10, 64 << 10);
        if (round === 3) reference.fill(0, 64 << 10, 128 << 10);
      }
      const back = new Uint8Array(1 << 20);
      await image.read(back, 0);
      assert.ok(Buffer.from(back).equals(Buffer.from(reference)), `${opts.join(' ')}: read back differs`);
    } finally {
      await closeChain(image);
    }
    const ref = join(dir, 'concurrent.raw');
    await writeFile(ref, reference);
    assert.equal((await run('qemu-img', ['check', img])).code, 0);
    assert.equal((await run('qemu-img', ['compare', '-f', 'raw', '-F', 'qcow2', ref, img])).code, 0, opts.join(' '));
  }
});
