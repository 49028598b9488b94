/**
 * The safety inspector against images made by the real qemu-img (every format and subformat it
 * writes), and against hand-crafted unsafe images: each refused with an issue naming the
 * feature. Every file is inspected twice — random access and as a one-pass stream in odd
 * chunk sizes — and both reports must be identical.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, open, readFile, writeFile, truncate, copyFile } from 'node:fs/promises';
import { createReadStream } from 'node:fs';
import { join } from 'node:path';
import {
  inspectFile, StreamInspector, checkDeclaredFormat, crc32c, listFormats, openImage, closeChain, isDiskError, type InspectionReport, type IssueCode,
} from '@diskhub/disk';
import { FORMAT_INSPECTIONS } from '@diskhub/disk/inspect/formats';
import { vhdChecksum } from '@diskhub/disk/vpc/header';
import { tempDir, qemuImg, qemuIo, needs, run, runOk } from '@diskhub/testkit';

async function streamed(path: string, chunk: number): Promise<InspectionReport> {
  const insp = new StreamInspector(path);
  for await (const c of createReadStream(path, { highWaterMark: chunk })) await insp.write(c as Buffer);
  return insp.end();
}

/** Inspect both ways; the reports must agree. */
async function inspect(path: string): Promise<InspectionReport> {
  const a = await inspectFile(path);
  for (const chunk of [4096, 3 * 1024 * 1024 + 17]) {
    const b = await streamed(path, chunk);
    assert.deepEqual({ ...b }, { ...a }, `stream (chunks of ${chunk}) and file inspection of ${path} differ`);
  }
  return a;
}

const codes = (r: InspectionReport): IssueCode[] => r.issues.map((i) => i.code);

async function patch(path: string, offset: number, bytes: Uint8Array): Promise<void> {
  const fh = await open(path, 'r+');
  try { await fh.write(bytes, 0, bytes.length, offset); } finally { await fh.close(); }
}
const be32 = (n: number) => { const b = new Uint8Array(4); new DataView(b.buffer).setUint32(0, n, false); return b; };
const be64 = (n: bigint) => { const b = new Uint8Array(8); new DataView(b.buffer).setBigUint64(0, n, false); return b; };

test('inspector: every format qemu-img writes is recognised, sized like qemu-img and safe', needs('qemu-img'), async (t) => {
  const dir = await tempDir(t);
  const cases: Array<[file: string, fmt: string, opts: string, subformat?: string]> = [
    ['v3.qcow2', 'qcow2', ''],
    ['v2.qcow2', 'qcow2', 'compat=0.10,cluster_size=4k'],
    ['big.qcow2', 'qcow2', 'cluster_size=2M'],
    ['ext.qcow2', 'qcow2', 'extended_l2=on'],
    ['mono.vmdk', 'vmdk', '', 'monolithicSparse'],
    ['stream.vmdk', 'vmdk', 'subformat=streamOptimized', 'streamOptimized'],
    ['dyn.vhd', 'vpc', '', 'dynamic'],
    ['fixed.vhd', 'vpc', 'subformat=fixed', 'fixed'],
    ['forced.vhd', 'vpc', 'force_size=on'],
    ['dyn.vhdx', 'vhdx', '', 'dynamic'],
    ['fixed.vhdx', 'vhdx', 'subformat=fixed', 'fixed'],
    ['dyn.vdi', 'vdi', '', 'dynamic'],
    ['static.vdi', 'vdi', 'static=on', 'static'],
    ['t.qed', 'qed', ''],
    ['t.qcow', 'qcow', ''],
    ['t.parallels', 'parallels', ''],
    ['t.raw', 'raw', ''],
  ];
  for (const [file, fmt, opts] of cases) {
    await qemuImg('create', '-q', '-f', fmt, ...(opts ? ['-o', opts] : []), join(dir, file), '100M');
  }
  // Data in a few places, so tables are populated (and streamOptimized has grains).
  await qemuIo('-f', 'qcow2', '-c', 'write -P 0x5a 1M 3M', '-c', 'write -P 7 90M 64k', join(dir, 'v3.qcow2'));
  await qemuImg('convert', '-f', 'qcow2', '-O', 'vmdk', '-o', 'subformat=streamOptimized', join(dir, 'v3.qcow2'), join(dir, 'stream.vmdk'));
  for (const [file, fmt, , subformat] of cases) {
    const r = await inspect(join(dir, file));
    const peer = JSON.parse(await qemuImg('info', '-f', fmt, '--output=json', join(dir, file)));
    assert.equal(r.format, fmt, file);
    assert.equal(r.virtualSize, peer['virtual-size'], `${file}: virtual size`);
    assert.deepEqual(r.issues, [], `${file}: ${JSON.stringify(r.issues)}`);
    assert.equal(r.safe, true);
    if (subformat) assert.equal(r.subformat, subformat, file);
    assert.deepEqual(checkDeclaredFormat(r, fmt === 'vpc' ? 'vhd' : fmt).issues, [], `${file} declared as ${fmt}`);
  }
});

test('inspector: luks and ISO 9660 (El Torito) images', needs('qemu-img', 'genisoimage'), async (t) => {
  const dir = await tempDir(t);
  await qemuImg('create', '-q', '-f', 'luks', '--object', 'secret,id=s,data=pw', '-o', 'key-secret=s,iter-time=10', join(dir, 'a.luks'), '16M');
  const luks = await inspect(join(dir, 'a.luks'));
  assert.equal(luks.format, 'luks');
  assert.equal(luks.virtualSize, 16 << 20);
  // The ISO's content in a folder of its own (not the folder the ISO is written to).
  const tree = join(dir, 'tree');
  await mkdir(tree);
  await writeFile(join(tree, 'boot.img'), new Uint8Array(1474560));
  await runOk('genisoimage', ['-quiet', '-o', join(dir, 'boot.iso'), '-b', 'boot.img', '-c', 'boot.cat', tree]);
  const iso = await inspect(join(dir, 'boot.iso'));
  assert.equal(iso.format, 'iso');
  assert.equal(iso.details.bootable, true);
  assert.equal(iso.safe, true);
  assert.equal(checkDeclaredFormat(iso, 'iso').safe, true);
  assert.equal(checkDeclaredFormat(iso, 'qcow2').safe, false);
  // UDF-only media (no ISO 9660 bridge): the volume recognition sequence from sector 16.
  const udf = new Uint8Array(64 * 1024);
  for (const [sector, id] of [[16, 'BEA01'], [17, 'NSR02'], [18, 'TEA01']] as const) {
    udf.set(new TextEncoder().encode(id), sector * 2048 + 1);
  }
  await writeFile(join(dir, 'udf.iso'), udf);
  const u = await inspect(join(dir, 'udf.iso'));
  assert.equal(u.format, 'iso');
  assert.equal(u.subformat, 'udf');
  assert.equal(checkDeclaredFormat(u, 'iso').safe, true);
});

test('inspector: qcow2 with a backing file is refused, naming it', needs('qemu-img'), async (t) => {
  const dir = await tempDir(t);
  await qemuImg('create', '-q', '-f', 'raw', join(dir, 'base.raw'), '1M');
  await qemuImg('create', '-q', '-f', 'qcow2', '-b', '/etc/passwd', '-F', 'raw', '-u', join(dir, 'top.qcow2'), '1M');
  const r = await inspect(join(dir, 'top.qcow2'));
  assert.deepEqual(codes(r), ['backing-file']);
  assert.match(r.issues[0]!.message, /\/etc\/passwd/);
  assert.equal(r.safe, false);
});

test('inspector: qcow2 with an external data file is refused', needs('qemu-img'), async (t) => {
  const dir = await tempDir(t);
  await qemuImg('create', '-q', '-f', 'qcow2', '-o', 'data_file=/dev/sda', join(dir, 'df.qcow2'), '1M').catch(async () => {
    // qemu-img creates the data file; point it somewhere harmless and rewrite the name.
    await qemuImg('create', '-q', '-f', 'qcow2', '-o', `data_file=${join(dir, 'data.raw')}`, join(dir, 'df.qcow2'), '1M');
  });
  const r = await inspect(join(dir, 'df.qcow2'));
  assert.ok(codes(r).includes('data-file'), JSON.stringify(r.issues));
});

test('inspector: qcow2 geometry pointing outside the file', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  const base = join(dir, 'base.qcow2');
  await qemuImg('create', '-q', '-f', 'qcow2', base, '64M');
  await qemuIo('-f', 'qcow2', '-c', 'write -P 1 0 64k', base);
  const variants: Array<[string, (p: string) => Promise<void>, RegExp]> = [
    ['L1 table offset past the end', (p) => patch(p, 40, be64(1n << 40n)), /L1 table .* past the end/],
    ['refcount table past the end', (p) => patch(p, 48, be64(1n << 40n)), /refcount table .* past the end/],
    ['L1 entry past the end', async (p) => {
      const l1 = Number(new DataView((await readFile(p)).buffer).getBigUint64(40, false));
      await patch(p, l1, be64((1n << 63n) | (1n << 40n)));
    }, /L1 table entry 0 points to offset/],
    ['L1 entry unaligned', async (p) => {
      const l1 = Number(new DataView((await readFile(p)).buffer).getBigUint64(40, false));
      await patch(p, l1, be64((1n << 63n) | 0x10200n));
    }, /unaligned/],
    ['truncated file', (p) => truncate(p, 3 * 65536), /past the end|points to offset/],
  ];
  for (const [name, damage, message] of variants) {
    const p = join(dir, `${name.replace(/\W+/g, '-')}.qcow2`);
    await copyFile(base, p);
    await damage(p);
    const r = await inspect(p);
    assert.ok(codes(r).includes('geometry'), `${name}: ${JSON.stringify(r.issues)}`);
    assert.match(r.issues.map((i) => i.message).join('\n'), message, name);
    // qemu-img agrees that these images are broken (a truncated file it reads as zeroes).
    if (name !== 'truncated file') {
      const check = await run('qemu-img', ['check', '-f', 'qcow2', p]);
      assert.notEqual(check.code, 0, `${name}: qemu-img check passed`);
    }
  }
});

test('inspector: qcow2 with unknown incompatible features cannot be vouched for', needs('qemu-img'), async (t) => {
  const dir = await tempDir(t);
  const p = join(dir, 'f.qcow2');
  await qemuImg('create', '-q', '-f', 'qcow2', p, '1M');
  await patch(p, 72, be64(1n << 40n));
  const r = await inspect(p);
  assert.deepEqual(codes(r), ['unknown-features']);
});

test('inspector: a qcow2 whose L1 table moved far into the file is still checked in one pass', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  const p = join(dir, 'grown.qcow2');
  await qemuImg('create', '-q', '-f', 'qcow2', p, '64M');
  await qemuIo('-f', 'qcow2', '-c', 'write -P 3 0 12M', p);
  // Growing past what the L1 table covers makes qemu allocate a new table at the end.
  await qemuImg('resize', '-q', '-f', 'qcow2', p, '20T');
  const l1 = Number(new DataView((await readFile(p)).buffer).getBigUint64(40, false));
  assert.ok(l1 > 8 << 20, `L1 table at ${l1}`);
  const r = await inspect(p);
  assert.equal(r.safe, true, JSON.stringify(r.issues));
  // Damage an entry of the moved table: the stream must have captured it to see this.
  await patch(p, l1, be64((1n << 63n) | (1n << 45n)));
  assert.ok(codes(await inspect(p)).includes('geometry'));
});

test('inspector: vmdk descriptors naming other files are refused', needs('qemu-img'), async (t) => {
  const dir = await tempDir(t);
  await qemuImg('create', '-q', '-f', 'vmdk', '-o', 'subformat=monolithicFlat', join(dir, 'flat.vmdk'), '1M');
  const flat = await inspect(join(dir, 'flat.vmdk'));
  assert.deepEqual(codes(flat).sort(), ['create-type', 'extents']);
  await qemuImg('create', '-q', '-f', 'vmdk', '-o', 'subformat=twoGbMaxExtentSparse', join(dir, 'split.vmdk'), '1M');
  assert.ok(codes(await inspect(join(dir, 'split.vmdk'))).includes('create-type'));
  // A hand-written descriptor reading the host's files.
  await writeFile(join(dir, 'evil.vmdk'), [
    '# Disk DescriptorFile', 'version=1', 'CID=fffffffe', 'parentCID=ffffffff', 'createType="monolithicFlat"',
    'RW 2048 FLAT "/etc/passwd" 0', 'RW 2048 FLAT "../../secret.img" 0', '', 'ddb.adapterType = "ide"', '',
  ].join('\n'));
  const evil = await inspect(join(dir, 'evil.vmdk'));
  const text = evil.issues.map((i) => i.message).join('\n');
  assert.match(text, /"\/etc\/passwd", a path outside the image/);
  assert.match(text, /"\.\.\/\.\.\/secret\.img", a path outside the image/);
  // qemu-img follows such names: the danger is real.
  await writeFile(join(dir, 'passwd.vmdk'), [
    '# Disk DescriptorFile', 'version=1', 'CID=fffffffe', 'parentCID=ffffffff', 'createType="monolithicFlat"',
    'RW 1 FLAT "/etc/passwd" 0', '',
  ].join('\n'));
  const peer = JSON.parse(await qemuImg('info', '--output=json', join(dir, 'passwd.vmdk')));
  assert.equal(peer.format, 'vmdk');
  assert.match(JSON.stringify(peer), /\/etc\/passwd/);
  assert.ok(codes(await inspect(join(dir, 'passwd.vmdk'))).includes('extents'));
});

test('inspector: a monolithicSparse vmdk whose embedded descriptor adds a flat extent is refused', needs('qemu-img'), async (t) => {
  const dir = await tempDir(t);
  const p = join(dir, 'mono.vmdk');
  await qemuImg('create', '-q', '-f', 'vmdk', p, '1M');
  const bytes = await readFile(p);
  const descOff = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(28, true)) * 512;
  const desc = new TextDecoder().decode(bytes.subarray(descOff, descOff + 2048)).replace(/\0+$/, '');
  const evil = desc.replace(/(RW \d+ SPARSE "[^"]*")/, '$1\nRW 2048 FLAT "/etc/shadow" 0');
  assert.notEqual(evil, desc);
  await patch(p, descOff, new TextEncoder().encode(evil));
  const r = await inspect(p);
  assert.ok(codes(r).includes('extents'), JSON.stringify(r.issues));
  assert.match(r.issues.map((i) => i.message).join('\n'), /\/etc\/shadow/);
});

test('inspector: differencing vhd, vhdx and vdi images are refused (they need a parent)', needs('qemu-img'), async (t) => {
  const dir = await tempDir(t);
  // vhd: turn a dynamic disk into a differencing one, with a parent name, checksums fixed.
  const vhd = join(dir, 'child.vhd');
  await qemuImg('create', '-q', '-f', 'vpc', vhd, '8M');
  const b = new Uint8Array(await readFile(vhd));
  const footerAt = [0, b.length - 512];
  const dynAt = Number(new DataView(b.buffer).getBigUint64(16, false));
  for (const at of footerAt) {
    new DataView(b.buffer).setUint32(at + 60, 4, false);
    new DataView(b.buffer).setUint32(at + 64, vhdChecksum(b.subarray(at, at + 512), 64), false);
  }
  const name = 'parent.vhd';
  for (let i = 0; i < name.length; i++) new DataView(b.buffer).setUint16(dynAt + 64 + 2 * i, name.charCodeAt(i), false);
  new DataView(b.buffer).setUint32(dynAt + 36, vhdChecksum(b.subarray(dynAt, dynAt + 1024), 36), false);
  await writeFile(vhd, b);
  const rv = await inspect(vhd);
  assert.deepEqual(codes(rv), ['parent']);
  assert.match(rv.issues[0]!.message, /parent\.vhd/);
  assert.equal(rv.subformat, 'differencing');

  // vhdx: set has_parent in the file parameters metadata item (not checksummed).
  const vhdx = join(dir, 'child.vhdx');
  await qemuImg('create', '-q', '-f', 'vhdx', vhdx, '8M');
  const x = new Uint8Array(await readFile(vhdx));
  const xv = new DataView(x.buffer);
  let metaOff = -1;
  for (let i = 0; i < xv.getUint32(192 * 1024 + 8, true); i++) {
    const at = 192 * 1024 + 16 + i * 32;
    if (xv.getUint32(at, true) === 0x8b7ca206) metaOff = Number(xv.getBigUint64(at + 16, true));
  }
  assert.ok(metaOff > 0);
  for (let i = 0; i < xv.getUint16(metaOff + 10, true); i++) {
    const at = metaOff + 32 + i * 32;
    if (xv.getUint32(at, true) === 0xcaa16737) {
      const item = metaOff + xv.getUint32(at + 16, true);
      xv.setUint32(item + 4, xv.getUint32(item + 4, true) | 2, true);
    }
  }
  await writeFile(vhdx, x);
  assert.deepEqual(codes(await inspect(vhdx)), ['parent']);

  // vdi: a parent UUID.
  const vdi = join(dir, 'child.vdi');
  await qemuImg('create', '-q', '-f', 'vdi', vdi, '8M');
  await patch(vdi, 440, new Uint8Array(16).fill(0x42));
  assert.deepEqual(codes(await inspect(vdi)), ['parent']);
});

test('inspector: qed with a backing file is refused', needs('qemu-img'), async (t) => {
  const dir = await tempDir(t);
  await qemuImg('create', '-q', '-f', 'qed', '-b', 'base.img', '-F', 'raw', '-u', join(dir, 'c.qed'), '4M');
  const r = await inspect(join(dir, 'c.qed'));
  assert.deepEqual(codes(r), ['backing-file']);
  assert.match(r.issues[0]!.message, /base\.img/);
});

test('inspector: data that is two formats at once is ambiguous', needs('qemu-img', 'genisoimage', 'sgdisk'), async (t) => {
  const dir = await tempDir(t);
  const qcow = join(dir, 'q.qcow2');
  await qemuImg('create', '-q', '-f', 'qcow2', qcow, '1M');
  const header = (await readFile(qcow)).subarray(0, 512);

  // A qcow2 header in an ISO's system area (the first 32 KiB, which ISO 9660 leaves free).
  await writeFile(join(dir, 'f.txt'), 'x');
  const iso = join(dir, 'q.iso');
  await run('genisoimage', ['-quiet', '-o', iso, join(dir, 'f.txt')]);
  await patch(iso, 0, header);
  const a = await inspect(iso);
  assert.ok(codes(a).includes('ambiguous'), JSON.stringify(a));
  assert.deepEqual(a.detected.sort(), ['iso', 'qcow2']);

  // A GPT disk that is also a qcow2.
  const gpt = join(dir, 'gpt.img');
  await qemuImg('create', '-q', '-f', 'raw', gpt, '8M');
  await run('sgdisk', ['-n', '1:2048:0', gpt]);
  const plain = await inspect(gpt);
  assert.equal(plain.format, 'raw');
  assert.equal(plain.subformat, 'gpt');
  assert.equal(plain.safe, true);
  await patch(gpt, 0, header.subarray(0, 104));
  assert.ok(codes(await inspect(gpt)).includes('ambiguous'));

  // A qcow2 file that also ends with a VHD footer.
  const vhd = join(dir, 'f.vhd');
  await qemuImg('create', '-q', '-f', 'vpc', '-o', 'subformat=fixed', vhd, '1M');
  const both = join(dir, 'both.qcow2');
  await writeFile(both, Buffer.concat([await readFile(qcow), (await readFile(vhd)).subarray(-512)]));
  assert.ok(codes(await inspect(both)).includes('ambiguous'));
});

test('inspector: a declared format that does not match the data is refused', needs('qemu-img'), async (t) => {
  const dir = await tempDir(t);
  await qemuImg('create', '-q', '-f', 'qcow2', join(dir, 'a.qcow2'), '1M');
  await qemuImg('create', '-q', '-f', 'raw', join(dir, 'a.raw'), '1M');
  const q = await inspect(join(dir, 'a.qcow2'));
  const raw = await inspect(join(dir, 'a.raw'));
  assert.deepEqual(codes(checkDeclaredFormat(q, 'raw')), ['format-mismatch']);
  assert.deepEqual(codes(checkDeclaredFormat(raw, 'qcow2')), ['format-mismatch']);
  assert.deepEqual(codes(checkDeclaredFormat(raw, 'vmdk')), ['format-mismatch']);
  assert.deepEqual(codes(checkDeclaredFormat(raw, 'aki')), ['format-mismatch']);
  assert.deepEqual(checkDeclaredFormat(q, 'qcow2').issues, []);
  assert.deepEqual(checkDeclaredFormat(raw, 'raw').issues, []);
});

test('inspector: randomly damaged headers give a report, never an exception or a hang', needs('qemu-img'), async (t) => {
  const dir = await tempDir(t);
  const seeds: string[] = [];
  for (const [fmt, opts] of [['qcow2', ''], ['vmdk', ''], ['vmdk', 'subformat=streamOptimized'], ['vpc', ''], ['vhdx', ''], ['vdi', ''], ['qed', ''], ['qcow', ''], ['parallels', '']] as const) {
    const p = join(dir, `seed-${fmt}-${seeds.length}`);
    await qemuImg('create', '-q', '-f', fmt, ...(opts ? ['-o', opts] : []), p, '4M');
    seeds.push(p);
  }
  let seed = 12345;
  const rand = (n: number) => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed % n; };
  const target = join(dir, 'mutant');
  for (let round = 0; round < 150; round++) {
    const bytes = new Uint8Array(await readFile(seeds[round % seeds.length]!));
    // Mostly the structures the inspector reads: the first KiB, the vhdx headers/regions, the tail.
    const hot = [0, 512, 65536, 196608, 262144, bytes.length - 1536];
    for (let k = 1 + rand(8); k > 0; k--) {
      const base = hot[rand(hot.length)]!;
      const at = Math.max(0, Math.min(bytes.length - 1, base + rand(1024)));
      bytes[at] = rand(4) === 0 ? 0xff : rand(256);
    }
    if (rand(10) === 0) bytes.fill(0xff, rand(512), rand(512) + 8);
    await writeFile(target, rand(8) === 0 ? bytes.subarray(0, rand(bytes.length)) : bytes);
    const r = await inspectFile(target);
    assert.equal(typeof r.format, 'string');
    assert.equal(r.safe, r.issues.length === 0);
    // The streamed report must agree even on damaged input.
    assert.deepEqual({ ...(await streamed(target, 65536)) }, { ...r });
  }
});

test('inspector: it runs exactly the inspections the registered drivers carry', () => {
  const carried = listFormats().flatMap((d) => [...(d.inspections ?? [])]);
  assert.equal(new Set(carried).size, carried.length, 'no inspection is carried twice');
  assert.deepEqual(new Set(FORMAT_INSPECTIONS), new Set(carried));
  // Every format that can be uploaded has one (raw's: ISO 9660 and disk labels).
  for (const d of listFormats()) assert.ok(d.inspections?.length, `${d.name} carries an inspection`);
});

/** The reader refuses the image (a DiskError, not a crash). */
async function readerRefuses(path: string): Promise<void> {
  await assert.rejects(openImage(path).then(closeChain), (e) => isDiskError(e), path);
}

test('inspector: qcow, parallels and cloop headers are decoded as their readers decode them', needs('qemu-img', 'create_compressed_fs'), async (t) => {
  const dir = await tempDir(t);
  // qcow (v1): a cluster size QEMU refuses is malformed; a backing file is named.
  const qcow = join(dir, 'a.qcow');
  await qemuImg('create', '-q', '-f', 'qcow', qcow, '4M');
  assert.deepEqual(codes(await inspect(qcow)), []);
  await patch(qcow, 32, new Uint8Array([20]));
  assert.deepEqual(codes(await inspect(qcow)), ['malformed']);
  await readerRefuses(qcow);
  const base = join(dir, 'base.raw');
  await writeFile(base, new Uint8Array(4 << 20));
  const child = join(dir, 'child.qcow');
  await qemuImg('create', '-q', '-f', 'qcow', '-b', base, '-F', 'raw', child);
  const withBacking = await inspect(child);
  assert.deepEqual(codes(withBacking), ['backing-file']);
  assert.equal(withBacking.details['backing-filename'], base);

  // parallels: zero sectors per track is malformed (QEMU: "Zero sectors per track"); a BAT past the end is geometry.
  const ploop = join(dir, 'a.parallels');
  await qemuImg('create', '-q', '-f', 'parallels', ploop, '64M');
  const good = await inspect(ploop);
  assert.deepEqual(codes(good), []);
  assert.equal(good.virtualSize, 64 << 20);
  const cut = join(dir, 'cut.parallels');
  await writeFile(cut, (await readFile(ploop)).subarray(0, 80));
  assert.deepEqual(codes(await inspect(cut)), ['geometry']);
  await readerRefuses(cut);
  await patch(ploop, 28, new Uint8Array(4));
  assert.deepEqual(codes(await inspect(ploop)), ['malformed']);
  await readerRefuses(ploop);

  // cloop: a block size that is not a multiple of 512 is malformed; offsets past the end are geometry.
  const input = join(dir, 'fs.bin');
  await writeFile(input, new Uint8Array(256 * 1024).map((_, i) => (i * 13) & 0xff));
  const cloop = join(dir, 'a.cloop');
  await runOk('create_compressed_fs', ['-q', '-B', '65536', input, cloop]);
  const c = await inspect(cloop);
  assert.deepEqual([c.format, codes(c), c.virtualSize], ['cloop', [], 256 * 1024]);
  const cutCloop = join(dir, 'cut.cloop');
  await writeFile(cutCloop, (await readFile(cloop)).subarray(0, 140));
  assert.deepEqual(codes(await inspect(cutCloop)), ['geometry']);
  await readerRefuses(cutCloop);
  await patch(cloop, 128, be32(1000));
  assert.deepEqual(codes(await inspect(cloop)), ['malformed']);
  await readerRefuses(cloop);
});

test('crc32c matches the standard check value', () => {
  assert.equal(crc32c(new TextEncoder().encode('123456789')), 0xe3069283);
});
