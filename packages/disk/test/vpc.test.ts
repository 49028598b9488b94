/**
 * vpc (VHD) against qemu-img / qemu-io 7.2: dynamic and fixed disks qemu writes read back
 * byte-exact; random writes through our driver pass `qemu-img compare` against a raw
 * reference; a differencing disk (crafted from a qemu-made one: disk type 4, a W2ru parent
 * locator, a partly cleared sector bitmap) reads through its parent; hostile headers give
 * DiskErrors.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { openImage, closeChain, isDiskError, vhdChecksum, getFormat, type Extent } from '@diskhub/disk';
import { tempDir, qemuImg, qemuIo, needs, run, diskhub } from '@diskhub/testkit';
import { mutationRounds, randomWrites, readAll } from './random-writes.js';


const MiB = 1024 * 1024;

test('vpc read: qemu-io patterns in dynamic and fixed disks read back as qemu-img convert -O raw gives them', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  for (const sub of ['dynamic', 'fixed']) {
    const img = join(dir, `${sub}.vhd`);
    await qemuImg('create', '-q', '-f', 'vpc', '-o', `subformat=${sub}`, img, '9M');
    await qemuIo('-f', 'vpc', '-c', 'write -P 0x11 1000 3000000', '-c', 'write -P 0x22 2097150 4', '-c', 'write -z 4194304 2097152',
      '-c', 'write -P 0x33 8388607 9', img);
    await qemuImg('convert', '-f', 'vpc', '-O', 'raw', img, join(dir, `${sub}.raw`));
    const expected = await readFile(join(dir, `${sub}.raw`));
    const ours = await readAll(img, 'vpc');
    assert.ok(Buffer.from(ours).equals(expected), `${sub}: contents`);
  }
});

test('vpc write: random writes and zero ranges compare equal to a raw reference', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  for (const [sub, seed] of [['dynamic', 3], ['fixed', 5]] as const) {
    const img = join(dir, `${sub}.vhd`);
    const ref = join(dir, `${sub}.raw`);
    await qemuImg('create', '-q', '-f', 'vpc', '-o', `subformat=${sub}`, img, '11M');
    await qemuIo('-f', 'vpc', '-c', 'write -P 0x5a 3145728 1048576', img);
    await qemuImg('convert', '-f', 'vpc', '-O', 'raw', img, ref);
    const reference = new Uint8Array(await readFile(ref));
    const image = await openImage(img, { format: 'vpc', writable: true });
    try {
      await randomWrites(image, reference, seed, 40, 3 * MiB, 10 * MiB);
    } finally {
      await closeChain(image);
    }
    await writeFile(ref, reference);
    const cmp = await run('qemu-img', ['compare', '-f', 'vpc', '-F', 'raw', img, ref]);
    assert.equal(cmp.code, 0, `${sub}: qemu-img compare: ${cmp.stdout}${cmp.stderr}`);
    const info = JSON.parse(await qemuImg('info', '-f', 'vpc', '--output=json', img));
    assert.equal(info['virtual-size'], reference.length, `${sub}: size after writes`);
    assert.ok(Buffer.from(await readAll(img, 'vpc')).equals(Buffer.from(reference)), `${sub}: our read-back`);
  }
});

/** Turn a qemu-made dynamic disk into a differencing disk naming `parentName` (a W2ru locator appended to the file). */
async function makeDifferencing(path: string, parentName: string, clearSectors: [number, number]): Promise<void> {
  const b = Buffer.from(await readFile(path));
  const footerAtEnd = b.length - 512;
  const locator = Buffer.from(parentName, 'utf16le');
  const locatorAt = b.length;
  const out = Buffer.alloc(b.length + 512 + 512);
  b.copy(out);
  locator.copy(out, locatorAt);
  const dyn = out.subarray(512, 1536);
  dyn.write('W2ru', 576, 'latin1');
  dyn.writeUInt32BE(512, 576 + 4);
  dyn.writeUInt32BE(locator.length, 576 + 8);
  dyn.writeBigUInt64BE(BigInt(locatorAt), 576 + 16);
  dyn.writeUInt32BE(vhdChecksum(dyn, 36), 36);
  // Block 0's bitmap: clear the bits of the chosen sectors, so they come from the parent.
  const bitmapAt = out.readUInt32BE(1536) * 512;
  for (let s = clearSectors[0]; s < clearSectors[1]; s++) out[bitmapAt + (s >> 3)]! &= ~(0x80 >> (s & 7));
  const footer = out.subarray(0, 512);
  footer.writeUInt32BE(4, 60);
  footer.writeUInt32BE(vhdChecksum(footer, 64), 64);
  footer.copy(out, out.length - 512);
  out.fill(0, footerAtEnd, footerAtEnd + 512);
  await writeFile(path, out);
}

test('vpc differencing: sectors with clear bitmap bits and unallocated blocks read from the parent', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  const parent = join(dir, 'parent.vhd');
  const child = join(dir, 'child.vhd');
  await qemuImg('create', '-q', '-f', 'vpc', parent, '8M');
  await qemuIo('-c', 'write -P 0x11 0 6M', parent);
  await qemuImg('create', '-q', '-f', 'vpc', child, '8M');
  await qemuIo('-c', 'write -P 0x22 1048576 4096', '-c', 'write -P 0x33 4194816 1000', child);
  await qemuImg('convert', '-O', 'raw', parent, join(dir, 'parent.raw'));
  await qemuImg('convert', '-O', 'raw', child, join(dir, 'child.raw'));
  const p = await readFile(join(dir, 'parent.raw'));
  const c = await readFile(join(dir, 'child.raw'));
  await makeDifferencing(child, 'parent.vhd', [0, 2048]);
  // Block 0: first MiB from the parent, second from the child; block 1 unallocated (parent); block 2 the child's; block 3 the parent's.
  const expected = Buffer.concat([p.subarray(0, MiB), c.subarray(MiB, 2 * MiB), p.subarray(2 * MiB, 4 * MiB), c.subarray(4 * MiB, 6 * MiB), p.subarray(6 * MiB)]);
  const img = await openImage(child);
  try {
    assert.equal(img.backingRef?.filename, 'parent.vhd');
    assert.equal(img.backing?.format, 'vpc');
    const buf = new Uint8Array(img.size);
    await img.read(buf, 0);
    assert.ok(Buffer.from(buf).equals(expected), 'contents through the parent');
    const extents: Extent[] = [];
    for await (const e of img.blockStatus(0, img.size)) extents.push(e);
    assert.deepEqual(extents.filter((e) => e.offset < 2 * MiB).map((e) => [e.offset, e.length, e.depth, e.data]),
      [[0, MiB, 1, true], [MiB, MiB, 0, true]]);
    const info = await img.info();
    assert.equal(info['backing-filename'], 'parent.vhd');
    assert.equal(info['full-backing-filename'], parent);
    await assert.rejects(openImage(child, { writable: true }), (e) => isDiskError(e, 'EUNSUPPORTED'));
  } finally {
    await closeChain(img);
  }
  // `diskhub img convert` flattens the chain; qemu-img finds it equal to the expected contents.
  await writeFile(join(dir, 'expected.raw'), expected);
  const conv = await diskhub(['img', 'convert', '-O', 'qcow2', child, join(dir, 'flat.qcow2')]);
  assert.equal(conv.code, 0, conv.stderr);
  const cmp = await run('qemu-img', ['compare', '-F', 'raw', join(dir, 'flat.qcow2'), join(dir, 'expected.raw')]);
  assert.equal(cmp.code, 0, cmp.stdout + cmp.stderr);
});

test('vpc hostile headers: typed errors with clear messages, bounded memory', needs('qemu-img'), async (t) => {
  const dir = await tempDir(t);
  const base = join(dir, 'base.vhd');
  await qemuImg('create', '-q', '-f', 'vpc', base, '10M');
  const clean = await readFile(base);
  const fixFooter = (b: Buffer) => { b.writeUInt32BE(vhdChecksum(b.subarray(0, 512), 64), 64); };
  const fixDyn = (b: Buffer) => { b.writeUInt32BE(vhdChecksum(b.subarray(512, 1536), 36), 512 + 36); };
  const cases: [string, (b: Buffer) => Buffer | void, RegExp][] = [
    ['bad checksum', (b) => { b[100]! ^= 1; }, /Incorrect header checksum/],
    ['block size 0', (b) => { b.writeUInt32BE(0, 512 + 32); fixDyn(b); }, /Invalid block size 0/],
    ['huge BAT', (b) => { b.writeUInt32BE(0x7fffffff, 512 + 28); fixDyn(b); }, /Max Table Entries too large/],
    ['large BAT', (b) => { b.writeUInt32BE(0x10000000, 512 + 28); fixDyn(b); }, /larger than the engine's limit/],
    ['BAT outside the file', (b) => { b.writeBigUInt64BE(1n << 40n, 512 + 16); fixDyn(b); }, /block allocation table .* extends past the end of the file/],
    ['block past the end', (b) => { b.writeUInt32BE(0x100000, 1536); }, /free_data_block_offset points after the end of file/],
    ['no cxsparse', (b) => { b[512] = 0; }, /Invalid header magic/],
    ['dynamic header outside', (b) => { b.writeBigUInt64BE(1n << 50n, 16); fixFooter(b); }, /dynamic header offset .* outside the file/],
    ['page table too small', (b) => { b.writeUInt32BE(1, 512 + 28); fixDyn(b); }, /Page table too small/],
    ['disk type 7', (b) => { b.writeUInt32BE(7, 60); fixFooter(b); }, /unsupported VHD disk type 7/],
    ['too large', (b) => { b.writeUInt16BE(0xffff, 56); b[58] = 16; b[59] = 255; b.write('qem2', 28, 'latin1'); b.writeBigUInt64BE(1n << 50n, 48); fixFooter(b); }, /File too large/],
    ['empty', () => Buffer.alloc(0), /File too small for a VHD header/],
    ['no footer', () => Buffer.alloc(4096), /invalid VPC image/],
  ];
  for (const [name, damage, message] of cases) {
    const bytes = Buffer.from(clean);
    const out = damage(bytes) ?? bytes;
    const path = join(dir, `${name.replace(/ /g, '-')}.vhd`);
    await writeFile(path, out);
    await assert.rejects(openImage(path, { format: 'vpc' }), (e) => isDiskError(e) && message.test(e.message), name);
  }
});

test('vpc mutations: damaged copies of qemu-made images only ever give DiskErrors', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  for (const sub of ['dynamic', 'fixed']) {
    const img = join(dir, `m-${sub}.vhd`);
    await qemuImg('create', '-q', '-f', 'vpc', '-o', `subformat=${sub}`, img, '3M');
    await qemuIo('-f', 'vpc', '-c', 'write -P 0x61 0 4096', '-c', 'write -P 0x62 2097152 4096', img);
    const bytes = new Uint8Array(await readFile(img));
    // Dynamic disks: the footer copy, dynamic header and BAT lead the file; fixed ones end with the footer.
    const r = await mutationRounds(getFormat('vpc'), bytes, 1000, sub === 'fixed' ? [bytes.length - 512, bytes.length] : [0, 2048], sub === 'fixed' ? 202 : 303);
    assert.ok(r.opened > 0 && r.refused > 0, `${sub}: both outcomes seen: ${JSON.stringify(r)}`);
  }
});
