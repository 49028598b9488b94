/**
 * The LUKS1 layer on its own: volumes made by qemu-img unlock with the right passphrase and
 * not with a wrong one; hostile headers (absurd iterations, stripes, key material or payload
 * offsets) fail fast with a typed error; the anti-forensic splitter round-trips.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { openImage, isDiskError, MAX_KDF_ITERATIONS } from '@diskhub/disk';
import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';
import { SectorCipher, afMerge, afSplit, type CipherSpec } from '@diskhub/disk/luks/cipher';
import { tempDir, runOk, needs } from '@diskhub/testkit';
import { hostio } from '@diskhub/hostio';
import { randomWrites } from './random-writes.js';

const enc = (s: string) => new TextEncoder().encode(s);
const OBJ = ['--object', 'secret,id=s,data=hunter2'];

async function makeLuks(dir: string, name = 'v.luks'): Promise<string> {
  const path = join(dir, name);
  await runOk('qemu-img', ['create', '-q', '-f', 'luks', ...OBJ, '-o', 'key-secret=s,iter-time=10', path, '1M']);
  await runOk('qemu-io', [...OBJ, '--image-opts', `driver=luks,file.filename=${path},key-secret=s`, '-c', 'write -P 0xab 512 1024']);
  return path;
}

/** Open `path` and expect a DiskError with `code` whose message matches `re`, quickly. */
async function rejects(path: string, code: string, re: RegExp, options: Parameters<typeof openImage>[1] = { secret: enc('hunter2') }): Promise<void> {
  const start = Date.now();
  await assert.rejects(openImage(path, options), (e: unknown) => {
    assert.ok(isDiskError(e), `not a DiskError: ${String(e)}`);
    assert.equal(e.code, code, e.message);
    assert.match(e.message, re);
    assert.ok(!e.message.includes('hunter2'), 'the secret never shows in a message');
    return true;
  });
  assert.ok(Date.now() - start < 5000, 'hostile header handled quickly');
}

test('a LUKS volume from qemu-img unlocks with its passphrase only', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  const path = await makeLuks(dir);
  const img = await openImage(path, { secret: enc('hunter2') });
  try {
    assert.equal(img.format, 'luks');
    assert.equal(img.size, 1 << 20);
    // Sectors never written hold decrypted noise (as in QEMU); the written ones read back.
    const buf = new Uint8Array(1024);
    await img.read(buf, 512);
    assert.ok(buf.every((b) => b === 0xab));
  } finally {
    await img.close();
  }
  await rejects(path, 'EACCES', /^Invalid password, cannot unlock any keyslot$/, { secret: enc('hunter3') });
  await rejects(path, 'EACCES', /key-secret' is required/, {});
  const header = await openImage(path, { headerOnly: true });
  assert.equal((await header.info()).encrypted, true);
  await header.close();
});

test('hostile LUKS headers give typed errors, never long PBKDF2 runs or huge buffers', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  const good = await readFile(await makeLuks(dir));
  const variant = async (name: string, patch: (v: DataView) => void): Promise<string> => {
    const b = Buffer.from(good);
    patch(new DataView(b.buffer, b.byteOffset, b.byteLength));
    const p = join(dir, name);
    await writeFile(p, b);
    return p;
  };
  const slot0 = 208;
  await rejects(await variant('iters.luks', (v) => v.setUint32(slot0 + 4, 0xffffffff)), 'ELIMIT', new RegExp(`key slot 0 asks for 4294967295 PBKDF2 iterations \\(limit ${MAX_KDF_ITERATIONS}\\)`));
  await rejects(await variant('mkiters.luks', (v) => v.setUint32(164, 0xfffffff0)), 'ELIMIT', /master key digest asks for/);
  await rejects(await variant('stripes.luks', (v) => v.setUint32(slot0 + 44, 0xffffffff)), 'ECORRUPT', /stripes/);
  await rejects(await variant('keyoff.luks', (v) => v.setUint32(slot0 + 40, 0x7fffffff)), 'ECORRUPT', /overlaps the payload|past the end/);
  await rejects(await variant('keyhdr.luks', (v) => v.setUint32(slot0 + 40, 0)), 'ECORRUPT', /overlaps the header/);
  await rejects(await variant('payload.luks', (v) => v.setUint32(104, 0xffffffff)), 'ECORRUPT', /payload offset .* past the end/);
  await rejects(await variant('keybytes.luks', (v) => v.setUint32(108, 0xffffffff)), 'EUNSUPPORTED', /key size/);
  await rejects(await variant('version.luks', (v) => v.setUint16(6, 2)), 'EUNSUPPORTED', /LUKS version 2 is not supported/, { format: 'luks', secret: enc('hunter2') });
  // A header cut short.
  const short = join(dir, 'short.luks');
  await writeFile(short, good.subarray(0, 300));
  await assert.rejects(openImage(short, { format: 'luks', secret: enc('hunter2') }), (e: unknown) => isDiskError(e, 'ETRUNCATED'));
  // Key material cut off: the slot's material lies past the end of the file.
  const cut = join(dir, 'cut.luks');
  await writeFile(cut, good.subarray(0, 8192));
  await assert.rejects(openImage(cut, { format: 'luks', secret: enc('hunter2') }), (e: unknown) => isDiskError(e, 'ECORRUPT'));
});

test('the anti-forensic splitter round-trips for every hash', () => {
  for (const hash of ['sha1', 'sha256', 'sha512', 'ripemd160']) {
    const key = new Uint8Array(64).map((_, i) => i * 7);
    const split = afSplit(hash, key, 4000);
    assert.equal(split.length, 64 * 4000);
    assert.deepEqual(afMerge(hash, split, 64, 4000), key);
    split[100]! ^= 1;
    assert.notDeepEqual(afMerge(hash, split, 64, 4000), key);
  }
});

test('random writes through the engine to encrypted qcow2 and LUKS read back in qemu-img, check clean', needs('qemu-img'), async (t) => {
  const dir = await tempDir(t);
  const cases: Array<{ name: string; create: string[]; opts: (p: string) => string }> = [
    { name: 'xts.qcow2', create: ['-f', 'qcow2', '-o', 'encrypt.format=luks,encrypt.key-secret=s,encrypt.iter-time=10'], opts: (p) => `driver=qcow2,file.filename=${p},encrypt.key-secret=s` },
    { name: 'extl2.qcow2', create: ['-f', 'qcow2', '-o', 'encrypt.format=luks,encrypt.key-secret=s,encrypt.iter-time=10,extended_l2=on,encrypt.cipher-mode=cbc,encrypt.ivgen-alg=essiv'], opts: (p) => `driver=qcow2,file.filename=${p},encrypt.key-secret=s` },
    { name: 'raw.luks', create: ['-f', 'luks', '-o', 'key-secret=s,iter-time=10'], opts: (p) => `driver=luks,file.filename=${p},key-secret=s` },
  ];
  for (const c of cases) {
    const path = join(dir, c.name);
    await runOk('qemu-img', ['create', '-q', ...OBJ, ...c.create, path, '4M']);
    const img = await openImage(path, { secret: enc('hunter2'), writable: true });
    const reference = new Uint8Array(img.size);
    try {
      // A raw LUKS payload that was never written decrypts to noise: start from known bytes.
      if (img.format === 'luks') await img.write!(reference, 0);
      await randomWrites(img, reference, 7, 60, 200_000, 2 << 20);
    } finally {
      await img.close();
    }
    const out = join(dir, `${c.name}.raw`);
    await runOk('qemu-img', ['convert', ...OBJ, '--image-opts', c.opts(path), '-O', 'raw', out]);
    assert.ok(Buffer.from(reference).equals(await readFile(out)), `${c.name}: qemu-img reads what we wrote`);
    if (c.name.endsWith('.qcow2')) await runOk('qemu-img', ['check', ...OBJ, '--image-opts', c.opts(path)]);
  }
});

test('hostile crypto header pointers in qcow2 give typed errors', needs('qemu-img'), async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'e.qcow2');
  await runOk('qemu-img', ['create', '-q', '-f', 'qcow2', ...OBJ, '-o', 'encrypt.format=luks,encrypt.key-secret=s,encrypt.iter-time=10', path, '1M']);
  const good = await readFile(path);
  // The crypto header extension follows the 112-byte v3 header: type, length, offset, length.
  assert.equal(good.readUInt32BE(112), 0x0537be77);
  const variant = async (name: string, patch: (b: Buffer) => void): Promise<string> => {
    const b = Buffer.from(good);
    patch(b);
    const p = join(dir, name);
    await writeFile(p, b);
    return p;
  };
  await rejects(await variant('past-eof.qcow2', (b) => b.writeBigUInt64BE(1n << 50n, 120)), 'ECORRUPT', /crypto header .* lies outside the file/);
  await rejects(await variant('unaligned.qcow2', (b) => b.writeBigUInt64BE(0x40001n, 120)), 'ECORRUPT', /lies outside the file/);
  await rejects(await variant('huge-len.qcow2', (b) => b.writeBigUInt64BE(1n << 62n, 128)), 'ECORRUPT', /lies outside the file/);
  const luksAt = Number(good.readBigUInt64BE(120));
  await rejects(await variant('iters.qcow2', (b) => b.writeUInt32BE(0xffffffff, luksAt + 208 + 4)), 'ELIMIT', /PBKDF2 iterations/);
  await rejects(await variant('nomagic.qcow2', (b) => b.writeUInt32BE(0, luksAt)), 'EFORMAT', /not in LUKS format/);
  // Header-only opens (info) still describe a well-formed image without the secret.
  const img = await openImage(path, { headerOnly: true });
  assert.equal((await img.info()).encrypted, true);
  await img.close();
});

test('bulk XTS and CBC match one OpenSSL cipher per sector, across the 2^32 sector wrap', () => {
  const reference = (spec: CipherSpec, key: Uint8Array, data: Uint8Array, first: number, encrypt: boolean): Buffer => {
    const out = Buffer.alloc(data.length);
    const bits = (spec.mode === 'xts' ? spec.keyBytes / 2 : spec.keyBytes) * 8;
    for (let s = 0; s < data.length / 512; s++) {
      let iv = Buffer.alloc(16);
      if (spec.ivgen === 'plain') iv.writeUInt32LE((first + s) % 2 ** 32);
      else iv.writeBigUInt64LE(BigInt(first + s));
      if (spec.ivgen === 'essiv') {
        const k = createHash(spec.ivgenHash!).update(key).digest();
        const c = createCipheriv(`aes-${k.length * 8}-ecb`, k, null).setAutoPadding(false);
        iv = Buffer.concat([c.update(iv), c.final()]);
      }
      const c = (encrypt ? createCipheriv : createDecipheriv)(`aes-${bits}-${spec.mode}`, key, iv).setAutoPadding(false);
      c.update(data.subarray(s * 512, s * 512 + 512)).copy(out, s * 512);
      c.final();
    }
    return out;
  };
  const specs: CipherSpec[] = [
    { family: 'aes', mode: 'xts', ivgen: 'plain64', keyBytes: 64 },
    { family: 'aes', mode: 'xts', ivgen: 'plain', keyBytes: 32 },
    { family: 'aes', mode: 'xts', ivgen: 'essiv', ivgenHash: 'sha256', keyBytes: 64 },
    { family: 'aes', mode: 'cbc', ivgen: 'essiv', ivgenHash: 'sha256', keyBytes: 16 },
    { family: 'aes', mode: 'cbc', ivgen: 'plain64', keyBytes: 32 },
  ];
  for (const spec of specs) {
    const key = randomBytes(spec.keyBytes);
    const cipher = new SectorCipher(spec, key);
    // An odd offset inside a pooled buffer: the bulk path must not assume alignment.
    const data = Buffer.concat([Buffer.alloc(3), randomBytes(512 * 9)]).subarray(3);
    const first = 2 ** 32 - 4;
    const sealed = new Uint8Array(data.length);
    cipher.encrypt(data, sealed, first);
    assert.ok(Buffer.from(sealed).equals(reference(spec, key, data, first, true)), `${spec.mode}-${spec.ivgen} encrypt`);
    const opened = Buffer.from(sealed);
    cipher.decrypt(opened, first);
    assert.ok(opened.equals(data), `${spec.mode}-${spec.ivgen} decrypt`);
  }
});

test('the threadpool XTS (hostio, Node\'s OpenSSL) gives the bytes the engine\'s own XTS gives, over several pieces and the 2^32 sector wrap; other modes and a key with equal halves stay on the main thread', async () => {
  if (process.env.CI === 'true') assert.ok(hostio?.xtsSectors, 'the hostio addon has xtsSectors');
  const specs: CipherSpec[] = [
    { family: 'aes', mode: 'xts', ivgen: 'plain64', keyBytes: 64 },
    { family: 'aes', mode: 'xts', ivgen: 'plain', keyBytes: 32 },
    { family: 'aes', mode: 'xts', ivgen: 'essiv', ivgenHash: 'sha256', keyBytes: 64 },
    { family: 'aes', mode: 'cbc', ivgen: 'plain64', keyBytes: 32 },
  ];
  // 700 KiB + 3 sectors: three threadpool pieces, the last one short, starting just below 2^32.
  const data = randomBytes((700 << 10) + 3 * 512);
  const first = 2 ** 32 - 600;
  const keys = (spec: CipherSpec) => {
    const equalHalves = Buffer.alloc(spec.keyBytes);
    randomBytes(spec.keyBytes / 2).copy(equalHalves);
    equalHalves.copy(equalHalves, spec.keyBytes / 2, 0, spec.keyBytes / 2);
    return spec.mode === 'xts' ? [randomBytes(spec.keyBytes), equalHalves] : [randomBytes(spec.keyBytes)];
  };
  for (const spec of specs) {
    for (const key of keys(spec)) {
      const what = `${spec.mode}-${spec.ivgen}-${key.length * 8}`;
      const cipher = new SectorCipher(spec, key);
      const want = new Uint8Array(data.length);
      cipher.encrypt(data, want, first);
      const sealed = new Uint8Array(data.length);
      await cipher.encryptAsync(data, sealed, first);
      assert.ok(Buffer.from(sealed).equals(want), `${what}: encrypt`);
      const inPlace = Buffer.from(data);
      await cipher.encryptAsync(inPlace, inPlace, first);
      assert.ok(inPlace.equals(want), `${what}: encrypt in place`);
      await cipher.decryptAsync(sealed, first);
      assert.ok(Buffer.from(sealed).equals(data), `${what}: decrypt`);
    }
  }
  if (hostio?.xtsSectors) {
    // The raw call: IVs are the sector numbers, 32-bit ones wrap.
    const key = randomBytes(32);
    const block = randomBytes(1024);
    const sealed = Buffer.from(block);
    await hostio.xtsSectors(key, sealed, 2 ** 32 - 1, 32, true);
    for (const [s, n] of [[0, 2 ** 32 - 1], [1, 0]] as const) {
      const iv = Buffer.alloc(16);
      iv.writeUInt32LE(n);
      const c = createCipheriv('aes-128-xts', key, iv);
      assert.ok(c.update(block.subarray(s * 512, s * 512 + 512)).equals(sealed.subarray(s * 512, s * 512 + 512)), `sector ${s}`);
    }
    assert.throws(() => hostio!.xtsSectors!(key, Buffer.alloc(100), 0, 64, true), TypeError);
    assert.throws(() => hostio!.xtsSectors!(randomBytes(48), Buffer.alloc(512), 0, 64, true), TypeError);
  }
});
