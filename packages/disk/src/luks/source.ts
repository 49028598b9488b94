/**
 * A ByteSource that encrypts what is written and decrypts what is read, sector by sector,
 * over another ByteSource. Byte `o` of this view is byte `base + o` of the inner source and
 * lies in sector floor(o / 512), whose number gives the IV. A raw LUKS image is the view from
 * the payload offset on; a LUKS-encrypted qcow2 reads and writes its data clusters through a
 * view with base 0, so the IV comes from the host offset, as QEMU's qcow2 does for LUKS.
 *
 * Reads and writes that do not cover whole sectors read the edge sectors and write them back
 * whole; those go one at a time so two such writes to one sector cannot lose each other's bytes.
 */
import { settled } from '../blockdev.js';
import type { ByteSource, HostExtent } from '../source.js';
import { SECTOR_SIZE, type SectorCipher } from './cipher.js';

export class EncryptedSource implements ByteSource {
  readonly name: string;
  readonly readOnly: boolean;
  private partial: Promise<unknown> = Promise.resolve();

  constructor(readonly inner: ByteSource, private readonly cipher: SectorCipher, private readonly base = 0) {
    this.name = inner.name;
    this.readOnly = inner.readOnly;
  }

  async size(): Promise<number> {
    return Math.max(0, (await this.inner.size()) - this.base);
  }

  async read(buf: Uint8Array, offset: number): Promise<number> {
    if (buf.length === 0) return 0;
    const start = Math.floor(offset / SECTOR_SIZE) * SECTOR_SIZE;
    const end = Math.ceil((offset + buf.length) / SECTOR_SIZE) * SECTOR_SIZE;
    const aligned = start === offset && end === offset + buf.length;
    const work = aligned ? buf : new Uint8Array(end - start);
    const n = await this.inner.read(work, this.base + start);
    // Only whole sectors decrypt; a torn last sector (file cut short) reads as missing.
    const whole = Math.floor(n / SECTOR_SIZE) * SECTOR_SIZE;
    if (whole > 0) await this.cipher.decryptAsync(work.subarray(0, whole), start / SECTOR_SIZE);
    const got = Math.max(0, Math.min(buf.length, whole - (offset - start)));
    if (!aligned && got > 0) buf.set(work.subarray(offset - start, offset - start + got));
    return got;
  }

  async write(buf: Uint8Array, offset: number): Promise<void> {
    if (buf.length === 0) return;
    if (offset % SECTOR_SIZE === 0 && buf.length % SECTOR_SIZE === 0) {
      const out = new Uint8Array(buf.length);
      await this.cipher.encryptAsync(buf, out, offset / SECTOR_SIZE);
      await this.inner.write(out, this.base + offset);
      return;
    }
    const run = this.partial.then(() => this.writePartial(buf, offset));
    this.partial = run.catch(() => {});
    await run;
  }

  private async writePartial(buf: Uint8Array, offset: number): Promise<void> {
    const start = Math.floor(offset / SECTOR_SIZE) * SECTOR_SIZE;
    const end = Math.ceil((offset + buf.length) / SECTOR_SIZE) * SECTOR_SIZE;
    const whole = new Uint8Array(end - start);
    // Old contents of the first and last sector (zeroes past the end of the source).
    await this.read(whole.subarray(0, SECTOR_SIZE), start);
    if (end - start > SECTOR_SIZE) await this.read(whole.subarray(whole.length - SECTOR_SIZE), end - SECTOR_SIZE);
    whole.set(buf, offset - start);
    await this.cipher.encryptAsync(whole, whole, start / SECTOR_SIZE);
    await this.inner.write(whole, this.base + start);
  }

  async writev(bufs: Uint8Array[], offset: number): Promise<void> {
    let at = offset;
    const out: Uint8Array[] = [];
    let aligned = offset % SECTOR_SIZE === 0;
    for (const b of bufs) aligned &&= b.length % SECTOR_SIZE === 0;
    if (!aligned || !this.inner.writev) {
      for (const b of bufs) { await this.write(b, at); at += b.length; }
      return;
    }
    const encrypting: Promise<void>[] = [];
    for (const b of bufs) {
      const e = new Uint8Array(b.length);
      encrypting.push(this.cipher.encryptAsync(b, e, at / SECTOR_SIZE));
      out.push(e);
      at += b.length;
    }
    await settled(encrypting);
    await this.inner.writev(out, this.base + offset);
  }

  async truncate(size: number): Promise<void> {
    await this.inner.truncate(this.base + size);
  }

  async *hostExtents(offset: number, length: number): AsyncIterable<HostExtent> {
    // Every byte is ciphertext: a hole in the host file does not read as zeroes here.
    yield { offset, length, data: true };
  }

  async punchHole(offset: number, length: number): Promise<void> {
    // Zeroes must be encrypted like any other data.
    const zero = new Uint8Array(Math.min(length, 1 << 20));
    for (let at = 0; at < length; at += zero.length) {
      await this.write(zero.subarray(0, Math.min(zero.length, length - at)), offset + at);
    }
  }

  async allocate(offset: number, length: number): Promise<void> {
    await this.inner.allocate(this.base + offset, length);
  }

  allocatedSize(): Promise<number> { return this.inner.allocatedSize(); }
  flush(): Promise<void> { return this.inner.flush(); }
  close(): Promise<void> { return this.inner.close(); }
}
