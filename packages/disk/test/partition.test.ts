import test from 'node:test';
import assert from 'node:assert/strict';
import { readFile, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as zlib from 'node:zlib';
import {
  openImage, closeChain, readPartitionTable, openPartition, WindowDevice, RawImage, MemorySource, isDiskError, MBR_TYPE_NAMES, GPT_TYPE_NAMES, openInside,
  type BlockDevice, type Extent, type PartitionTable,
} from '@diskhub/disk';
import { tempDir, needs, runOk } from '@diskhub/testkit';

const MiB = 1 << 20;

async function blankImage(dir: string, name: string, size = 64 * MiB): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, '');
  await truncate(path, size);
  return path;
}

async function tableOf(path: string): Promise<PartitionTable | null> {
  const img = await openImage(path, { format: 'raw' });
  try { return await readPartitionTable(img); } finally { await closeChain(img); }
}

/** Our table in the shape `sfdisk --json` prints. */
function asSfdisk(table: PartitionTable) {
  return table.partitions.map((p) => {
    const o: Record<string, unknown> = { n: p.number, start: p.startSector, size: p.sectors, type: p.type };
    if (table.type === 'gpt') o.uuid = p.uuid;
    if (p.name) o.name = p.name;
    if (p.attributes) o.attrs = p.attributes;
    if (p.bootable) o.bootable = true;
    return o;
  });
}

async function sfdiskJson(path: string) {
  const j = JSON.parse(await runOk('sfdisk', ['--json', path])).partitiontable;
  return {
    label: j.label as string,
    id: j.id as string,
    partitions: (j.partitions as Record<string, unknown>[]).map((p) => {
      const { node, ...rest } = p;
      return { n: Number(/(\d+)$/.exec(node as string)![1]), ...rest };
    }),
  };
}

function memoryDevice(bytes: Uint8Array): RawImage {
  return new RawImage(new MemorySource(bytes), bytes.length, true);
}

test('dos table from sfdisk: primaries, extended and logical partitions as sfdisk --json lists them', needs('sfdisk'), async (t) => {
  const dir = await tempDir(t);
  const path = await blankImage(dir, 'dos.img');
  const script = 'label: dos\nstart=2048,size=20480,type=83,bootable\nsize=10240,type=82\ntype=5\nsize=8192,type=83\nsize=4096,type=8e\nsize=2048,type=c\n';
  await runOk('sfdisk', ['-q', path], { input: script });
  const table = (await tableOf(path))!;
  const peer = await sfdiskJson(path);
  assert.equal(table.type, peer.label);
  assert.equal(table.id, peer.id);
  assert.deepEqual(asSfdisk(table), peer.partitions);
  assert.deepEqual(table.warnings, []);
  assert.deepEqual(table.partitions.map((p) => [p.number, p.kind, p.typeName]), [
    [1, 'primary', 'Linux'], [2, 'primary', 'Linux swap / Solaris'], [3, 'extended', 'Extended'],
    [5, 'logical', 'Linux'], [6, 'logical', 'Linux LVM'], [7, 'logical', 'W95 FAT32 (LBA)'],
  ]);
});

test('gpt from sgdisk: names (UTF-16), type GUIDs, attributes as sfdisk --json and sgdisk -p list them', needs('sgdisk', 'sfdisk'), async (t) => {
  const dir = await tempDir(t);
  const path = await blankImage(dir, 'gpt.img');
  await runOk('sgdisk', [
    '-n1:2048:+8M', '-t1:ef00', '-c1:EFI system',
    '-n2:0:+16M', '-t2:8300', '-c2:rootfs é✓', '-A2:set:2', '-A2:set:60', '-A2:set:0',
    '-n3:0:+4M', '-t3:8200', '-n4:0:+4M', '-t4:ef02', '-n5:0:+4M', '-t5:0700', '-c5:data',
    '-n6:0:0', '-t6:8e00', path,
  ]);
  const table = (await tableOf(path))!;
  const peer = await sfdiskJson(path);
  assert.equal(table.type, 'gpt');
  assert.equal(table.id, peer.id);
  assert.deepEqual(asSfdisk(table), peer.partitions);
  assert.equal(table.gpt!.header, 'primary');
  assert.deepEqual(table.warnings, []);
  // sgdisk -p: first/last usable sector, entry count, and the type names it uses for the same GUIDs.
  const listing = await runOk('sgdisk', ['-p', path]);
  assert.match(listing, new RegExp(`First usable sector is ${table.gpt!.firstUsableLba}, last usable sector is ${table.gpt!.lastUsableLba}`));
  assert.match(listing, new RegExp(`holds up to ${table.gpt!.entryCount} entries`));
  assert.deepEqual(table.partitions.map((p) => p.typeName), [
    'EFI System', 'Linux filesystem', 'Linux swap', 'BIOS boot', 'Microsoft basic data', 'Linux LVM',
  ]);
});

test('parted msdos and gpt tables agree with parted -m', needs('parted'), async (t) => {
  const dir = await tempDir(t);
  for (const label of ['msdos', 'gpt']) {
    const path = await blankImage(dir, `parted-${label}.img`);
    const parts = label === 'gpt'
      ? ['mkpart', 'boot', 'fat32', '1MiB', '9MiB', 'mkpart', 'root', 'ext4', '9MiB', '40MiB', 'mkpart', 'swap', 'linux-swap', '40MiB', '100%']
      : ['mkpart', 'primary', 'ext4', '1MiB', '9MiB', 'mkpart', 'extended', '9MiB', '60MiB', 'mkpart', 'logical', 'ext4', '10MiB', '20MiB', 'mkpart', 'logical', 'linux-swap', '21MiB', '30MiB'];
    await runOk('parted', ['-s', path, 'mklabel', label, ...parts]);
    const machine = await runOk('parted', ['-s', '-m', path, 'unit', 's', 'print']);
    const rows = machine.trim().split('\n').slice(2).map((line) => {
      const f = line.replace(/;$/, '').split(':');
      return { n: Number(f[0]), start: Number(f[1]!.slice(0, -1)), end: Number(f[2]!.slice(0, -1)), sectors: Number(f[3]!.slice(0, -1)), name: label === 'gpt' ? f[5] : undefined };
    });
    const table = (await tableOf(path))!;
    assert.equal(table.type, label === 'gpt' ? 'gpt' : 'dos');
    // parted shows an extended partition with its real size; logicals numbered from 5 as in Linux.
    assert.deepEqual(table.partitions.map((p) => ({ n: p.number, start: p.startSector, end: p.startSector + p.sectors - 1, sectors: p.sectors, name: label === 'gpt' ? p.name : undefined })), rows);
  }
});

/** Recompute a GPT header's CRC after editing it (the header is 92 bytes as sgdisk writes it). */
function fixHeaderCrc(sector: Uint8Array): void {
  const view = new DataView(sector.buffer, sector.byteOffset);
  const size = view.getUint32(12, true);
  view.setUint32(16, 0, true);
  view.setUint32(16, zlib.crc32(sector.subarray(0, size)) >>> 0, true);
}

test('gpt with a corrupted primary header or entry array: the backup header is used (sfdisk agrees)', needs('sgdisk', 'sfdisk'), async (t) => {
  const dir = await tempDir(t);
  const path = await blankImage(dir, 'backup.img');
  await runOk('sgdisk', ['-n1:2048:+8M', '-c1:one', '-n2:0:+8M', '-c2:two', path]);
  const good = (await tableOf(path))!;
  const original = await readFile(path);

  // 1. A byte of the primary header flipped: its CRC no longer matches.
  const broken = Buffer.from(original);
  broken[512 + 60] ^= 0xff;
  await writeFile(path, broken);
  let table = (await tableOf(path))!;
  assert.equal(table.gpt!.header, 'backup');
  assert.equal(table.gpt!.headerLba, 64 * MiB / 512 - 1);
  assert.deepEqual(asSfdisk(table), asSfdisk(good));
  assert.match(table.warnings.join('\n'), /primary GPT header is not usable \(header CRC32 mismatch/);
  assert.deepEqual(asSfdisk(table), (await sfdiskJson(path)).partitions);

  // 2. The primary entry array damaged (header intact): its array CRC fails, the backup's array is used.
  const badArray = Buffer.from(original);
  badArray[1024 + 56] ^= 0x41; // first character of partition 1's name
  await writeFile(path, badArray);
  table = (await tableOf(path))!;
  assert.equal(table.gpt!.header, 'backup');
  assert.equal(table.partitions[0]!.name, 'one');
  assert.match(table.warnings.join('\n'), /entry array CRC32 mismatch/);

  // 3. An absurd entry count with a valid CRC: refused by our limits, not allocated; the backup serves.
  const huge = Buffer.from(original);
  new DataView(huge.buffer, huge.byteOffset).setUint32(512 + 80, 0xffffffff, true);
  fixHeaderCrc(huge.subarray(512, 1024));
  await writeFile(path, huge);
  table = (await tableOf(path))!;
  assert.equal(table.gpt!.header, 'backup');
  assert.match(table.warnings.join('\n'), /exceed the limit/);

  // 4. Both headers broken: a typed error, not a guess.
  const both = Buffer.from(broken);
  both[original.length - 512 + 60] ^= 0xff;
  await writeFile(path, both);
  await assert.rejects(tableOf(path), (e) => isDiskError(e, 'ECORRUPT') && /no usable header/.test(e.message));

  // 5. A good primary with a broken backup: primary used, the bad backup reported.
  const badBackup = Buffer.from(original);
  badBackup[original.length - 512 + 60] ^= 0xff;
  await writeFile(path, badBackup);
  table = (await tableOf(path))!;
  assert.equal(table.gpt!.header, 'primary');
  assert.match(table.warnings.join('\n'), /backup GPT header is not usable/);
});

test('a hybrid MBR (sgdisk -h) in front of a GPT: the GPT is what counts, as in Linux', needs('sgdisk', 'sfdisk'), async (t) => {
  const dir = await tempDir(t);
  const path = await blankImage(dir, 'hybrid.img', 16 * MiB);
  await runOk('sgdisk', ['-n1:0:+4M', '-t1:0700', '-n2:0:+4M', '-h', '1', path]);
  const table = (await tableOf(path))!;
  assert.equal(table.type, 'gpt');
  assert.deepEqual(asSfdisk(table), (await sfdiskJson(path)).partitions);
});

test('gpt with 4096-byte sectors (fdisk -b 4096)', needs('fdisk'), async (t) => {
  const dir = await tempDir(t);
  const path = await blankImage(dir, '4k.img');
  await runOk('fdisk', ['-b', '4096', path], { input: 'g\nn\n\n\n+4M\nn\n\n\n+8M\nw\n' });
  const listing = await runOk('fdisk', ['-b', '4096', '-l', '-o', 'Device,Start,Sectors,UUID', path]);
  const rows = listing.trim().split('\n').filter((l) => /^\S+\d\s/.test(l) && l.startsWith(path)).map((l) => {
    const [dev, start, sectors, uuid] = l.trim().split(/\s+/);
    return { n: Number(/(\d+)$/.exec(dev!)![1]), start: Number(start), sectors: Number(sectors), uuid };
  });
  assert.equal(rows.length, 2);
  const table = (await tableOf(path))!;
  assert.equal(table.sectorSize, 4096);
  assert.deepEqual(table.partitions.map((p) => ({ n: p.number, start: p.startSector, sectors: p.sectors, uuid: p.uuid })), rows);
  assert.equal(table.partitions[0]!.start, rows[0]!.start * 4096);
});

/** A 1 MiB disk with an MBR whose entries we write by hand. */
function mbrDisk(entries: { status?: number; type: number; start: number; sectors: number }[], size = MiB): Uint8Array {
  const disk = new Uint8Array(size);
  const view = new DataView(disk.buffer);
  entries.forEach((e, i) => {
    const at = 446 + i * 16;
    disk[at] = e.status ?? 0;
    disk[at + 4] = e.type;
    view.setUint32(at + 8, e.start, true);
    view.setUint32(at + 12, e.sectors, true);
  });
  disk[510] = 0x55; disk[511] = 0xaa;
  return disk;
}

test('hostile dos tables: EBR loops, links outside the extended partition, partitions past the end, overlaps', async () => {
  // An extended partition whose first EBR links back to itself.
  const loop = mbrDisk([{ type: 0x05, start: 100, sectors: 1000 }]);
  const ebr = mbrDisk([{ type: 0x83, start: 10, sectors: 20 }, { type: 0x05, start: 0, sectors: 50 }], 512);
  loop.set(ebr, 100 * 512);
  let table = (await readPartitionTable(memoryDevice(loop)))!;
  assert.deepEqual(table.partitions.map((p) => p.number), [1, 5]);
  assert.match(table.warnings.join('\n'), /loops back to sector 100/);

  // A long chain of EBRs, each linking to the next: stopped at the limit, in bounded time.
  const chain = mbrDisk([{ type: 0x05, start: 1, sectors: 2047 }]);
  for (let s = 1; s < 2047; s++) {
    chain.set(mbrDisk([{ type: 0x83, start: 0, sectors: 1 }, { type: 0x05, start: s, sectors: 1 }], 512), s * 512);
  }
  table = (await readPartitionTable(memoryDevice(chain)))!;
  assert.equal(table.partitions.filter((p) => p.kind === 'logical').length, 256);
  assert.match(table.warnings.join('\n'), /more than 256 EBRs/);

  // A link that leaves the extended partition.
  const escape = mbrDisk([{ type: 0x0f, start: 100, sectors: 100 }]);
  escape.set(mbrDisk([{ type: 0x83, start: 1, sectors: 10 }, { type: 0x05, start: 500, sectors: 10 }], 512), 100 * 512);
  table = (await readPartitionTable(memoryDevice(escape)))!;
  assert.match(table.warnings.join('\n'), /outside the extended partition/);

  // Past the end and overlapping: listed with warnings; opening the one past the end is refused.
  const bad = mbrDisk([{ type: 0x83, start: 1024, sectors: 100 }, { type: 0x83, start: 1000, sectors: 100 }, { type: 0x83, start: 1500, sectors: 0xffffffff }]);
  const dev = memoryDevice(bad);
  table = (await readPartitionTable(dev))!;
  assert.equal(table.partitions.length, 3);
  assert.ok(table.partitions[2]!.beyondDisk);
  assert.match(table.warnings.join('\n'), /partition 3 .* extends past the end of the disk/);
  assert.match(table.warnings.join('\n'), /partitions 2 and 1 overlap/);
  await assert.rejects(openPartition(dev, 3), (e) => isDiskError(e, 'ECORRUPT'));
  await assert.rejects(openPartition(dev, 4), (e) => isDiskError(e, 'EINVAL') && /partition 4 does not exist/.test(e.message));
  await assert.rejects(openPartition(dev, 0), (e) => isDiskError(e, 'EINVAL'));

  // Bad boot indicators: not an MBR (a FAT boot sector also ends in 0x55AA).
  assert.equal(await readPartitionTable(memoryDevice(mbrDisk([{ status: 0x12, type: 0x83, start: 1, sectors: 1 }]))), null);
  // No signature, no table; a tiny device, no table.
  assert.equal(await readPartitionTable(memoryDevice(new Uint8Array(MiB))), null);
  assert.equal(await readPartitionTable(memoryDevice(new Uint8Array(512))), null);
  // A protective MBR with no GPT behind it.
  await assert.rejects(readPartitionTable(memoryDevice(mbrDisk([{ type: 0xee, start: 1, sectors: 2047 }]))), (e) => isDiskError(e, 'ECORRUPT'));
});

/** A device that records requests and reports a fixed extent list. */
class ScriptedDevice implements BlockDevice {
  reads: [number, number][] = [];
  constructor(readonly size: number, private readonly extents: Extent[]) {}
  async read(buf: Uint8Array, offset: number) { this.reads.push([offset, buf.length]); buf.fill(7); }
  async *blockStatus(offset: number, length: number): AsyncIterable<Extent> {
    for (const e of this.extents) if (e.offset + e.length > offset && e.offset < offset + length) yield e;
  }
  async close() {}
}

test('a window shifts reads and block status into the parent and checks bounds', async () => {
  const ext = (offset: number, length: number, data: boolean, hostOffset?: number): Extent => ({ offset, length, data, zero: !data, present: true, depth: 0, hostOffset });
  const parent = new ScriptedDevice(10000, [ext(0, 1500, true, 0), ext(1500, 2500, false), ext(4000, 6000, true, 20000)]);
  const win = new WindowDevice(parent, 1000, 4000);
  await win.read(new Uint8Array(10), 5);
  assert.deepEqual(parent.reads, [[1005, 10]]);
  const map: Extent[] = [];
  for await (const e of win.blockStatus(0, 4000)) map.push(e);
  assert.deepEqual(map.map((e) => [e.offset, e.length, e.data, e.hostOffset]), [[0, 500, true, 1000], [500, 2500, false, undefined], [3000, 1000, true, 20000]]);
  await assert.rejects(win.read(new Uint8Array(10), 3995), (e) => isDiskError(e, 'EINVAL'));
  await assert.rejects(win.read(new Uint8Array(1), -1), (e) => isDiskError(e, 'EINVAL'));
  assert.equal(win.write, undefined, 'a parent without write makes a read-only window');
  assert.throws(() => new WindowDevice(parent, 9000, 2000), (e) => isDiskError(e, 'ECORRUPT'));
});

test('a partition opened from a raw image reads and writes the same bytes as dd of that range', needs('sfdisk', 'dd'), async (t) => {
  const dir = await tempDir(t);
  const path = await blankImage(dir, 'rw.img', 16 * MiB);
  await runOk('sfdisk', ['-q', path], { input: 'label: gpt\nstart=2048,size=4096\nsize=8192\n' });
  const img = await openImage(path, { format: 'raw', writable: true });
  try {
    const part = await openPartition(img, 2);
    assert.equal(part.size, 8192 * 512);
    const data = new Uint8Array(3 * 4096).map((_, i) => (i * 13 + 1) & 0xff);
    await part.write!(data, 4096);
    await part.writeZeroes!(4096, 512);
    await assert.rejects(part.write!(new Uint8Array(512), part.size - 511), (e) => isDiskError(e, 'EINVAL'));
    await part.flush();
    await part.close();
  } finally {
    await closeChain(img);
  }
  const expected = new Uint8Array(3 * 4096).map((_, i) => (i * 13 + 1) & 0xff).fill(0, 0, 512);
  const dd = await runOk('sh', ['-c', `dd if='${path}' bs=512 skip=${6144 + 8} count=24 status=none | od -An -tx1 -v`]);
  assert.equal(dd.replace(/\s+/g, ''), Buffer.from(expected).toString('hex'));
  // The table itself is untouched (sfdisk still reads it).
  assert.equal((await sfdiskJson(path)).partitions.length, 2);
});

/** A small deterministic generator, so a failure can be replayed. */
function prng(seed: number) {
  return () => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed; };
}

test('damaged tables (random bytes over real MBR/EBR/GPT sectors): a table, null, or a DiskError, in bounded time', needs('sfdisk', 'sgdisk'), async (t) => {
  const dir = await tempDir(t);
  const dos = await blankImage(dir, 'f-dos.img', 4 * MiB);
  await runOk('sfdisk', ['-q', dos], { input: 'label: dos\nsize=1024,type=83\ntype=5\nsize=512\nsize=512\nsize=512\n' });
  const gpt = await blankImage(dir, 'f-gpt.img', 4 * MiB);
  await runOk('sgdisk', ['-n1:0:+1M', '-n2:0:+1M', gpt]);
  const rand = prng(7);
  for (const file of [dos, gpt]) {
    const original = new Uint8Array(await readFile(file));
    // The sectors that hold table structures: 0-33, the backup GPT header, and every sector
    // ending in 0x55AA (the MBR and the EBRs of the dos disk).
    const hot = [...Array(34).keys()].map((s) => s * 512);
    for (let at = 0; at < original.length; at += 512) if (original[at + 510] === 0x55 && original[at + 511] === 0xaa) hot.push(at);
    hot.push(original.length - 512);
    assert.ok(file === gpt || hot.length > 34 + 3, 'the EBRs are among the targets');
    for (let round = 0; round < 300; round++) {
      const bytes = original.slice();
      const flips = 1 + (rand() % 24);
      for (let i = 0; i < flips; i++) {
        const base = hot[rand() % hot.length]!;
        const at = Math.min(bytes.length - 1, Math.max(0, base + (rand() % 512)));
        bytes[at] = rand() & 0xff;
      }
      const dev = memoryDevice(bytes);
      try {
        const tbl = await readPartitionTable(dev);
        // Whatever was read can be opened or refused with a typed error.
        for (const p of tbl?.partitions ?? []) {
          try { await (await openPartition(dev, p.number, { table: tbl })).read(new Uint8Array(1), 0); } catch (e) { assert.ok(isDiskError(e), String(e)); }
        }
      } catch (e) {
        assert.ok(isDiskError(e), `round ${round}: ${e}`);
      }
    }
  }
});

test('partition type names are the ones sfdisk -l prints, for every MBR and GPT type we name', needs('sfdisk'), async (t) => {
  const dir = await tempDir(t);
  const names = async (path: string) => {
    const out = await runOk('sfdisk', ['-l', '-o', 'Device,Type', path]);
    return new Map(out.split('\n').filter((l) => l.startsWith(path)).map((l) => [Number(/^\S*?(\d+)\s/.exec(l)![1]), l.replace(/^\S+\s+/, '').trim()]));
  };
  // MBR: every named type except the container kinds, as logical partitions of one extended partition.
  const mbrTypes = [...MBR_TYPE_NAMES.keys()].filter((k) => k !== 0 && k !== 0xee && k !== 0x05 && k !== 0x0f && k !== 0x85);
  const dos = await blankImage(dir, 'types-dos.img', 128 * MiB);
  await runOk('sfdisk', ['-q', dos], { input: `label: dos\ntype=5\n${mbrTypes.map((k) => `size=1024,type=${k.toString(16)}`).join('\n')}\n` });
  let table = (await tableOf(dos))!;
  let peer = await names(dos);
  assert.equal(table.partitions.length, mbrTypes.length + 1);
  for (const p of table.partitions) assert.equal(p.typeName, peer.get(p.number), `MBR type ${p.type}`);
  // GPT: every named type GUID; sfdisk 2.38 does not know the newest few ("unknown"), those are skipped.
  const guids = [...GPT_TYPE_NAMES.keys()];
  const gpt = await blankImage(dir, 'types-gpt.img', 64 * MiB);
  await runOk('sfdisk', ['-q', gpt], { input: `label: gpt\n${guids.map((g) => `size=1024,type=${g}`).join('\n')}\n` });
  table = (await tableOf(gpt))!;
  peer = await names(gpt);
  assert.equal(table.partitions.length, guids.length);
  let compared = 0;
  for (const p of table.partitions) {
    const theirs = peer.get(p.number)!;
    if (theirs === 'unknown') continue; // newer than this sfdisk
    assert.equal(p.typeName, theirs, `GPT type ${p.type}`);
    compared++;
  }
  assert.ok(compared >= guids.length - 2, `${compared} of ${guids.length} GPT type names compared`);
});

test('openInside: a partition by number, the disk itself when nothing is selected, typed errors otherwise', needs('sfdisk'), async (t) => {
  const dir = await tempDir(t);
  const path = await blankImage(dir, 'inside.img', 8 * MiB);
  await runOk('sfdisk', ['-q', path], { input: 'label: dos\nstart=2048,size=4096,type=83\n' });
  const img = await openImage(path, { format: 'raw' });
  try {
    assert.equal((await openInside(img, {})).device, img);
    const p1 = await openInside(img, { partition: 1 });
    assert.deepEqual([p1.device.size, p1.partition!.start, p1.table!.type], [4096 * 512, 2048 * 512, 'dos']);
    await assert.rejects(openInside(img, { partition: 1, lv: 'a/b' }), (e) => isDiskError(e, 'EINVAL'));
    await assert.rejects(openInside(img, { lv: 'vg/lv' }), (e) => isDiskError(e, 'EINVAL') && /volume group vg not found/.test(e.message));
  } finally { await closeChain(img); }
});
