import test from 'node:test';
import assert from 'node:assert/strict';
import { readFile, truncate, writeFile, open } from 'node:fs/promises';
import { join } from 'node:path';
import {
  openImage, closeChain, openPartition, scanLvm, openLogicalVolume, identifyFilesystem, blkidFields, parsePvLabel,
  parseLvmConfig, crcRegister, RawImage, MemorySource, isDiskError, type Image, type BlockDevice,
} from '@diskhub/disk';
import { tempDir, needs, runOk, lvm, withLoopDevices, needsLoopDevices } from '@diskhub/testkit';

const MiB = 1 << 20;

async function sparseFile(path: string, size: number): Promise<string> {
  await writeFile(path, '');
  await truncate(path, size);
  return path;
}

interface PeerSegment { vg_name: string; lv_name: string; lv_uuid: string; lv_size: string; segtype: string; stripes: string; stripe_size: string; seg_pe_ranges: string }
interface PeerLayout {
  segments: PeerSegment[];
  pvs: { pv_name: string; pv_uuid: string; pe_start: string }[];
  vgs: { vg_name: string; vg_uuid: string; vg_extent_size: string; vg_seqno: string }[];
}

/**
 * Two PV files made by the real LVM tools on loop devices (A with two metadata areas, B with
 * none): VG vg0 (1 MiB extents) with
 * root (linear on PV A), data (striped over A and B, 64 KiB chunks) and rest (linear, two
 * segments: the end of B then the end of A). Returns the files and what lvs/pvs/vgs say.
 */
async function makePhysicalVolumes(dir: string): Promise<{ files: string[]; layout: PeerLayout; loopNames: string[] }> {
  const files = [await sparseFile(join(dir, 'pv-a.img'), 32 * MiB), await sparseFile(join(dir, 'pv-b.img'), 32 * MiB)];
  return withLoopDevices(files, async (loops) => {
    // PV A keeps two metadata copies (the second at its end), PV B none: the VG text is only on A.
    await lvm('pvcreate', ['--pvmetadatacopies', '2', loops[0]!], loops);
    await lvm('pvcreate', ['--pvmetadatacopies', '0', loops[1]!], loops);
    await lvm('vgcreate', ['-s', '1M', 'vg0', ...loops], loops);
    await lvm('lvcreate', ['-an', '-Zn', '-L', '12M', '-n', 'root', 'vg0', loops[0]!], loops);
    await lvm('lvcreate', ['-an', '-Zn', '-i', '2', '-I', '64k', '-L', '16M', '-n', 'data', 'vg0'], loops);
    await lvm('lvcreate', ['-an', '-Zn', '-l', '100%FREE', '-n', 'rest', 'vg0'], loops);
    const report = async (cmd: string, fields: string, extra: string[] = []) =>
      JSON.parse(await lvm(cmd, ['--reportformat', 'json', '--units', 'b', '--nosuffix', '-o', fields, ...extra], loops)).report[0];
    const layout: PeerLayout = {
      segments: (await report('lvs', 'vg_name,lv_name,lv_uuid,lv_size,segtype,stripes,stripe_size,seg_pe_ranges', ['--segments'])).seg,
      pvs: (await report('pvs', 'pv_name,pv_uuid,pe_start')).pv,
      vgs: (await report('vgs', 'vg_name,vg_uuid,vg_extent_size,vg_seqno')).vg,
    };
    return { files, layout, loopNames: loops };
  });
}

/** A GPT disk: partition 1 a small vfat-type placeholder, partitions 2 and 3 the two PVs (Linux LVM type). */
async function diskWithPvs(dir: string, pvFiles: string[]): Promise<string> {
  const disk = await sparseFile(join(dir, 'disk.img'), 72 * MiB);
  await runOk('sgdisk', ['-n1:0:+4M', '-t1:ef00', '-n2:0:+32M', '-t2:8e00', '-n3:0:+32M', '-t3:8e00', disk]);
  const img = await openImage(disk, { format: 'raw' });
  try {
    for (const [i, f] of pvFiles.entries()) {
      const p = await openPartition(img, i + 2);
      await runOk('dd', [`if=${f}`, `of=${disk}`, 'bs=1M', `seek=${p.start / MiB}`, 'conv=notrunc,sparse', 'status=none']);
    }
  } finally { await closeChain(img); }
  return disk;
}

/** Where LVM says an LV's bytes are: [pv index, first extent, extent count] per segment stripe. */
function peRanges(seg: PeerSegment, loops: string[]): { pv: number; first: number; count: number }[] {
  return seg.seg_pe_ranges.split(' ').map((r) => {
    const m = /^(.*):(\d+)-(\d+)$/.exec(r)!;
    return { pv: loops.indexOf(m[1]!), first: Number(m[2]), count: Number(m[3]) - Number(m[2]) + 1 };
  });
}

test('LVM made by pvcreate/vgcreate/lvcreate: VGs, LVs and segments as vgs/pvs/lvs report them; LV contents through linear, multi-segment and striped mappings', { ...needs('lvm', 'losetup', 'sgdisk', 'mkfs.ext4', 'blkid'), ...needsLoopDevices() }, async (t) => {
  const dir = await tempDir(t);
  const { files, layout, loopNames } = await makePhysicalVolumes(dir);
  const disk = await diskWithPvs(dir, files);
  const img: Image = await openImage(disk, { format: 'raw', writable: true });
  t.after(() => closeChain(img));
  const parts = [await openPartition(img, 2), await openPartition(img, 3)];

  // Scanning all three partitions finds the two PVs (and not the placeholder).
  const scan = await scanLvm([{ name: 'p1', device: await openPartition(img, 1) }, { name: 'p2', device: parts[0]! }, { name: 'p3', device: parts[1]! }]);
  assert.deepEqual(scan.warnings, []);
  assert.deepEqual(scan.pvs.map((p) => p.name), ['p2', 'p3']);
  assert.deepEqual(scan.pvs.map((p) => p.label.uuid), layout.pvs.map((p) => p.pv_uuid));
  assert.equal(scan.vgs.length, 1);
  const group = scan.vgs[0]!;
  const peerVg = layout.vgs[0]!;
  assert.deepEqual([group.vg.name, group.vg.uuid, group.vg.extentSize, group.vg.seqno], [peerVg.vg_name, peerVg.vg_uuid, Number(peerVg.vg_extent_size), Number(peerVg.vg_seqno)]);
  assert.deepEqual(group.missing, []);
  assert.deepEqual(group.vg.pvs.map((p) => p.peStart), layout.pvs.map((p) => Number(p.pe_start)));
  assert.deepEqual(scan.pvs.map((p) => p.label.metadataAreas.length), [2, 0]);
  assert.deepEqual(scan.pvs.map((p) => p.vgName), ['vg0', 'vg0']);

  // LVs: names, UUIDs, sizes, segment types, and each segment's PV extent ranges.
  const ours = group.vg.lvs.flatMap((lv) => lv.segments.map((s) => ({
    lv_name: lv.name, lv_uuid: lv.uuid, lv_size: String(lv.size), segtype: s.stripes.length > 1 ? 'striped' : 'linear',
    stripes: String(s.stripes.length), stripe_size: String(s.stripeSize ?? 0),
    seg_pe_ranges: s.stripes.map((st) => {
      const pv = group.vg.pvs.find((p) => p.key === st.pv)!;
      const per = s.extentCount / s.stripes.length;
      return `${loopNames[layout.pvs.findIndex((x) => x.pv_uuid === pv.uuid)]}:${st.startExtent}-${st.startExtent + per - 1}`;
    }).join(' '),
  })));
  const peer = layout.segments.map(({ vg_name: _vg, ...rest }) => rest);
  const key = (s: { lv_name: string; seg_pe_ranges: string }) => s.lv_name + s.seg_pe_ranges;
  assert.deepEqual(ours.sort((a, b) => key(a).localeCompare(key(b))), peer.sort((a, b) => key(a).localeCompare(key(b))));
  assert.deepEqual(group.vg.lvs.map((l) => [l.name, l.segmentType]).sort(), [['data', 'striped'], ['rest', 'linear'], ['root', 'linear']]);

  // Content: place bytes where lvs says each LV lives, then read them back through our LV devices.
  const extent = Number(peerVg.vg_extent_size);
  const peStart = layout.pvs.map((p) => Number(p.pe_start));
  const fh = await open(disk, 'r+');
  try {
    // rest: an ext4 filesystem spanning its two segments (PV B's end, then PV A's end).
    const restSegs = layout.segments.filter((s) => s.lv_name === 'rest');
    const restSize = Number(restSegs[0]!.lv_size);
    const fsFile = await sparseFile(join(dir, 'rest.ext4'), restSize);
    await runOk('mkfs.ext4', ['-q', '-F', '-L', 'lvm-home', fsFile]);
    const fs = await readFile(fsFile);
    // lvs lists segments in LV order.
    let lvOffset = 0;
    for (const seg of restSegs) {
      for (const r of peRanges(seg, loopNames)) {
        const bytes = r.count * extent;
        await fh.write(fs, lvOffset, bytes, parts[r.pv]!.start + peStart[r.pv]! + r.first * extent);
        lvOffset += bytes;
      }
    }
    assert.equal(lvOffset, restSize);
    // data: dm-stripe's layout, chunk i on stripe i % 2 at row floor(i / 2).
    const dataSeg = layout.segments.find((s) => s.lv_name === 'data')!;
    const chunk = Number(dataSeg.stripe_size);
    const stripes = peRanges(dataSeg, loopNames);
    const pattern = Buffer.alloc(Number(dataSeg.lv_size));
    for (let i = 0; i < pattern.length; i += 4) pattern.writeUInt32LE(i, i);
    for (let c = 0; c * chunk < pattern.length; c++) {
      const s = stripes[c % stripes.length]!;
      const row = Math.floor(c / stripes.length);
      await fh.write(pattern, c * chunk, chunk, parts[s.pv]!.start + peStart[s.pv]! + s.first * extent + row * chunk);
    }

    const rest = openLogicalVolume(scan, 'vg0/rest');
    const info = (await identifyFilesystem(rest))!;
    assert.deepEqual(blkidFields(info), Object.fromEntries((await runOk('blkid', ['-p', '-o', 'export', fsFile])).trim().split('\n').map((l) => l.split('=', 2)).filter(([k]) => k !== 'DEVNAME')));
    const all = new Uint8Array(rest.size);
    await rest.read(all, 0);
    assert.ok(Buffer.from(all).equals(fs), 'vg0/rest reads back the ext4 image byte for byte');
    const data = openLogicalVolume(scan, 'vg0/data');
    const got = new Uint8Array(data.size);
    await data.read(got, 0);
    assert.ok(Buffer.from(got).equals(pattern), 'vg0/data (striped) reads back the pattern');
    // An unaligned read across a chunk boundary and a write through the striped mapping.
    const piece = new Uint8Array(100_000);
    await data.read(piece, chunk - 1234);
    assert.ok(Buffer.from(piece).equals(pattern.subarray(chunk - 1234, chunk - 1234 + 100_000)));
    const patch = new Uint8Array(3 * chunk).fill(0xa5);
    await data.write!(patch, chunk / 2);
    pattern.fill(0xa5, chunk / 2, chunk / 2 + 3 * chunk);
    await data.read(got, 0);
    assert.ok(Buffer.from(got).equals(pattern), 'write through the stripes lands where reads find it');
    await data.writeZeroes!(chunk - 10, 2 * chunk + 20);
    pattern.fill(0, chunk - 10, 3 * chunk + 10);
    await data.read(got, 0);
    assert.ok(Buffer.from(got).equals(pattern), 'zeroes written through the stripes');
    // Block status covers the LV exactly, in order.
    let next = 0;
    for await (const e of data.blockStatus(0, data.size)) { assert.equal(e.offset, next); next += e.length; }
    assert.equal(next, data.size);
    await assert.rejects(data.read(new Uint8Array(2), data.size - 1), (e) => isDiskError(e, 'EINVAL'));
  } finally { await fh.close(); }

  // Only one of the two PVs: the VG is found, its missing PV named, and LVs that need it refused.
  const partial = await scanLvm([{ name: 'p2', device: parts[0]! }]);
  assert.deepEqual(partial.vgs[0]!.missing, [layout.pvs[1]!.pv_uuid]);
  assert.equal(openLogicalVolume(partial, 'vg0/root').size, 12 * MiB);
  assert.throws(() => openLogicalVolume(partial, 'vg0/data'), (e) => isDiskError(e, 'EINVAL') && /not given/.test(e.message));
  assert.throws(() => openLogicalVolume(scan, 'vg0/nope'), (e) => isDiskError(e, 'EINVAL'));
  assert.throws(() => openLogicalVolume(scan, 'nonsense'), (e) => isDiskError(e, 'EINVAL'));
});

/** Rewrite the committed metadata of a PV image: new text, placed at `at` in the area (wrapping if it must), checksums redone. */
function rewriteMetadata(pv: Uint8Array, transform: (text: string) => string, at?: number): void {
  for (const area of parsePvLabel(pv.subarray(0, 2048))!.metadataAreas) rewriteArea(pv, area, transform, at);
}

function rewriteArea(pv: Uint8Array, area: { offset: number; size: number }, transform: (text: string) => string, at?: number): void {
  const hv = new DataView(pv.buffer, pv.byteOffset + area.offset, 512);
  const oldOffset = Number(hv.getBigUint64(40, true));
  const oldSize = Number(hv.getBigUint64(48, true));
  const oldText = new TextDecoder().decode(pv.subarray(area.offset + oldOffset, area.offset + oldOffset + oldSize)).replace(/\0+$/, '');
  const text = new TextEncoder().encode(transform(oldText) + '\0');
  const offset = at ?? 512;
  const first = Math.min(text.length, area.size - offset);
  pv.set(text.subarray(0, first), area.offset + offset);
  pv.set(text.subarray(first), area.offset + 512);
  hv.setBigUint64(40, BigInt(offset), true);
  hv.setBigUint64(48, BigInt(text.length), true);
  hv.setUint32(56, crcRegister(text, 0xf597a6cf), true);
  hv.setUint32(0, crcRegister(new Uint8Array(pv.buffer, pv.byteOffset + area.offset + 4, 508), 0xf597a6cf), true);
}

test('LVM metadata: wrapped circular buffer, bad checksums, unsupported segment types, hostile text', { ...needs('lvm', 'losetup'), ...needsLoopDevices() }, async (t) => {
  const dir = await tempDir(t);
  const { files } = await makePhysicalVolumes(dir);
  const original = new Uint8Array(await readFile(files[0]!));
  const scanOf = (bytes: Uint8Array) => scanLvm([{ name: 'pv', device: new RawImage(new MemorySource(bytes), bytes.length, false) }]);

  // Text that runs off the end of the area and continues after the header: read whole.
  const wrapped = original.slice();
  const area = parsePvLabel(wrapped.subarray(0, 2048))!.metadataAreas[0]!;
  rewriteMetadata(wrapped, (s) => s, area.size - 700);
  let scan = await scanOf(wrapped);
  assert.deepEqual(scan.warnings, []);
  assert.deepEqual(scan.vgs[0]!.vg.lvs.map((l) => l.name).sort(), ['data', 'rest', 'root']);

  // A damaged text: the checksum catches it; the PV's second metadata copy (at its end) still serves.
  const damaged = original.slice();
  const areas = parsePvLabel(damaged.subarray(0, 2048))!.metadataAreas;
  assert.equal(areas.length, 2);
  const damage = (a: { offset: number }) => {
    const hv = new DataView(damaged.buffer, a.offset, 512);
    damaged[a.offset + Number(hv.getBigUint64(40, true)) + 10]! ^= 1;
  };
  damage(areas[0]!);
  scan = await scanOf(damaged);
  assert.equal(scan.vgs.length, 1);
  assert.match(scan.warnings.join('\n'), /metadata text checksum mismatch/);
  // Both copies damaged: reported, no VG invented.
  damage(areas[1]!);
  scan = await scanOf(damaged);
  assert.equal(scan.vgs.length, 0);
  assert.equal(scan.warnings.filter((w) => /metadata text checksum mismatch/.test(w)).length, 2);

  // A thin pool segment: listed, marked unsupported, refused on open with EUNSUPPORTED.
  const thin = original.slice();
  rewriteMetadata(thin, (s) => s.replace(/(root \{[\s\S]*?type = )"striped"/, '$1"thin-pool"'));
  scan = await scanOf(thin);
  const root = scan.vgs[0]!.vg.lvs.find((l) => l.name === 'root')!;
  assert.match(root.unsupported!, /thin-pool/);
  assert.throws(() => openLogicalVolume(scan, 'vg0/root'), (e) => isDiskError(e, 'EUNSUPPORTED'));

  // Extents past the end of the PV, segments with gaps, garbage: ECORRUPT warnings, never a crash.
  for (const [what, edit, message] of [
    ['extents past the PV', (s: string) => s.replace(/pe_count = \d+/, 'pe_count = 1'), /lie past the end of pv0/],
    ['a gap between segments', (s: string) => s.replace(/start_extent = 0/, 'start_extent = 5'), /segments do not follow each other/],
    ['an empty segment', (s: string) => s.replace(/extent_count = \d+/, 'extent_count = 0'), /extent_count is 0/],
    ['an absurd LV size', (s: string) => s.replace(/type = "striped"\nstripe_count = 1/, 'type = "zero"\nstripe_count = 1').replace(/extent_count = \d+/, 'extent_count = 9007199254740991'), /is too large/],
    ['unterminated section', (s: string) => s.replace(/\}\s*\n# Generated/, '\n# Generated'), /unexpected end|missing '\}'|expected/],
    ['unterminated string', (s: string) => s + '\nx = "never closed', /LVM metadata line \d+:/],
    ['a huge number', (s: string) => s.replace(/extent_size = \d+/, 'extent_size = 99999999999999999999999'), /too large/],
    ['binary junk', () => '\u0001\u0002{{{}}}=[[[[', /expected a name/],
  ] as const) {
    const bytes = original.slice();
    rewriteMetadata(bytes, edit);
    scan = await scanOf(bytes);
    assert.equal(scan.vgs.length, 0, what);
    assert.match(scan.warnings.join('\n'), message, what);
  }

  // The config parser on its own: nesting limits and sane values.
  assert.throws(() => parseLvmConfig('a {'.repeat(100)), (e) => isDiskError(e, 'ECORRUPT'));
  assert.deepEqual(JSON.parse(JSON.stringify(parseLvmConfig('x = [1, "two", 3] # comment\ny { z = "q\\"uote" }'))), { x: [1, 'two', 3], y: { z: 'q"uote' } });
});

test('randomly damaged PV labels and metadata headers: a scan result or warnings, never a crash', { ...needs('lvm', 'losetup'), ...needsLoopDevices() }, async (t) => {
  const dir = await tempDir(t);
  const { files } = await makePhysicalVolumes(dir);
  const original = new Uint8Array(await readFile(files[0]!));
  const areas = parsePvLabel(original.subarray(0, 2048))!.metadataAreas;
  // The label sector and the first 1 KiB of each metadata area (header and start of the text).
  const targets = [512, ...areas.flatMap((a) => [a.offset, a.offset + 512])];
  let seed = 99;
  const rand = () => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed; };
  for (let round = 0; round < 300; round++) {
    // The damage as a patch list over the untouched image (copying 32 MiB per round is slow).
    const patches = new Map<number, number>();
    for (let i = 1 + (rand() % 16); i > 0; i--) patches.set(targets[rand() % targets.length]! + (rand() % 512), rand() & 0xff);
    if (round % 2 === 0) {
      // Half the rounds keep the label and header checksums valid, so the damage reaches the parsers behind them.
      const fixCrc = (sectorAt: number, crcAt: number, from: number) => {
        const sector = original.slice(sectorAt, sectorAt + 512);
        for (const [at, v] of patches) if (at >= sectorAt && at < sectorAt + 512) sector[at - sectorAt] = v;
        const crc = crcRegister(sector.subarray(from), 0xf597a6cf);
        for (let b = 0; b < 4; b++) patches.set(sectorAt + crcAt + b, (crc >>> (8 * b)) & 0xff);
      };
      fixCrc(512, 16, 20);
      for (const a of areas) fixCrc(a.offset, 0, 4);
    }
    const device: BlockDevice = {
      size: original.length,
      async read(buf, offset) {
        buf.set(original.subarray(offset, offset + buf.length));
        for (const [at, v] of patches) if (at >= offset && at < offset + buf.length) buf[at - offset] = v;
      },
      async *blockStatus(offset, length) { yield { offset, length, data: true, zero: false, present: true, depth: 0 }; },
      async close() {},
    };
    const scan = await scanLvm([{ name: 'pv', device }]);
    for (const g of scan.vgs) {
      for (const lv of g.vg.lvs) {
        try {
          const dev = openLogicalVolume(scan, `${g.vg.name}/${lv.name}`);
          await dev.read(new Uint8Array(Math.min(dev.size, 4096)), 0);
        } catch (e) {
          assert.ok(isDiskError(e), `round ${round}: ${e}`);
        }
      }
    }
  }
});
