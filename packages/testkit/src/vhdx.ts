/**
 * Crafting VHDX files for tests ([MS-VHDX] §2.2-2.3): edit headers and region tables the way
 * another writer (or damage) would, and write log entries independently of diskhub's own log
 * writer, so that replay can be checked against QEMU's. The CRC-32C function is passed in
 * (testkit has no dependencies).
 */
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { qemuImg, qemuIo } from './run.js';

const MiB = 1 << 20;
/** First dword of the BAT and metadata region GUIDs, enough to find them in a region table. */
export const VHDX_BAT_GUID_DWORD = 0x2dc27766;
export const VHDX_METADATA_GUID_DWORD = 0x8b7ca206;

export type VhdxLogDescriptor = { kind: 'data'; offset: number; sector: Buffer } | { kind: 'zero'; offset: number; length: number };

export function vhdxCrafting(crc32c: (b: Uint8Array) => number) {
  function currentHeaderSlot(b: Buffer): number {
    const s1 = b.readBigUInt64LE(0x10000 + 8), s2 = b.readBigUInt64LE(0x20000 + 8);
    return s2 > s1 ? 0x20000 : 0x10000;
  }
  function fixChecksum(b: Buffer, at: number, length: number): void {
    b.writeUInt32LE(0, at + 4);
    b.writeUInt32LE(crc32c(b.subarray(at, at + length)), at + 4);
  }
  function regionEntry(b: Buffer, guidFirstDword: number): { at: number; offset: number; length: number } {
    for (let i = 0; i < b.readUInt32LE(0x30000 + 8); i++) {
      const at = 0x30000 + 16 + i * 32;
      if (b.readUInt32LE(at) === guidFirstDword) return { at, offset: Number(b.readBigUInt64LE(at + 16)), length: b.readUInt32LE(at + 24) };
    }
    throw new Error('region not found');
  }

  /** Write a new current header with `logGuid` (the other slot, sequence + 1), as a writer starting a log would. */
  function setLogGuid(b: Buffer, logGuid: Buffer): void {
    const cur = currentHeaderSlot(b);
    const other = cur === 0x10000 ? 0x20000 : 0x10000;
    b.copy(b, other, cur, cur + 4096);
    b.writeBigUInt64LE(b.readBigUInt64LE(cur + 8) + 1n, other + 8);
    logGuid.copy(b, other + 48);
    fixChecksum(b, other, 4096);
  }


  /** A log entry as [MS-VHDX] §2.3.1 lays it out, written independently of the driver's own writer. */
  function logEntry(seq: bigint, logGuid: Buffer, descs: VhdxLogDescriptor[], fileLength: number, lastFileOffset = fileLength): Buffer {
    const descSectors = Math.ceil((descs.length + 2) / 128);
    const data = descs.filter((d) => d.kind === 'data') as { offset: number; sector: Buffer }[];
    const e = Buffer.alloc((descSectors + data.length) * 4096);
    e.write('loge', 0, 'latin1');
    e.writeUInt32LE(e.length, 8);
    e.writeBigUInt64LE(seq, 16);
    e.writeUInt32LE(descs.length, 24);
    logGuid.copy(e, 32);
    e.writeBigUInt64LE(BigInt(fileLength), 48);
    e.writeBigUInt64LE(BigInt(lastFileOffset), 56);
    let k = 0;
    descs.forEach((d, i) => {
      const at = 64 + i * 32;
      e.write(d.kind === 'data' ? 'desc' : 'zero', at, 'latin1');
      e.writeBigUInt64LE(BigInt(d.offset), at + 16);
      e.writeBigUInt64LE(seq, at + 24);
      if (d.kind === 'zero') {
        e.writeBigUInt64LE(BigInt(d.length), at + 8);
      } else {
        d.sector.copy(e, at + 4, 4092, 4096);
        d.sector.copy(e, at + 8, 0, 8);
        const s = (descSectors + k++) * 4096;
        e.write('data', s, 'latin1');
        e.writeUInt32LE(Number(seq >> 32n), s + 4);
        d.sector.copy(e, s + 8, 8, 4092);
        e.writeUInt32LE(Number(seq & 0xffffffffn), s + 4092);
      }
    });
    e.writeUInt32LE(crc32c(e), 4);
    return e;
  }

  /**
   * A qemu-written image with a pending log of two entries, as if the writer crashed after
   * flushing the log but before applying it: entry 1 overwrites a sector of an allocated block
   * and zeroes 8 KiB of another; entry 2 maps a ZERO block to data already appended at the end
   * of the file (its BAT entry only in the log).
   */
  async function makeDirtyVhdx(dir: string): Promise<string> {
    const img = join(dir, 'dirty.vhdx');
    await qemuImg('create', '-q', '-f', 'vhdx', '-o', 'block_size=1M,log_size=2M', img, '8M');
    await qemuIo('-c', 'write -P 0x11 0 1M', '-c', 'write -P 0x22 2M 1M', img);
    const b = Buffer.from(await readFile(img));
    const bat = regionEntry(b, VHDX_BAT_GUID_DWORD);
    const blockOf = (i: number) => Number(b.readBigUInt64LE(bat.offset + i * 8) & ~0xfffffn);
    // The appended block (what a writer does before logging its BAT entry).
    const newBlock = Math.ceil(b.length / MiB) * MiB;
    const grown = Buffer.alloc(newBlock + MiB);
    b.copy(grown);
    grown.fill(0x5e, newBlock, newBlock + MiB);
    const logGuid = Buffer.from('0123456789abcdef0123456789abcdef', 'hex');
    setLogGuid(grown, logGuid);
    const logOffset = Number(grown.readBigUInt64LE(currentHeaderSlot(grown) + 72));
    const sector = Buffer.alloc(4096, 0x77);
    sector.write('leading!', 0, 'latin1');
    sector.write('tail', 4092, 'latin1');
    const batSectorAt = bat.offset;
    const batSector = Buffer.from(grown.subarray(batSectorAt, batSectorAt + 4096));
    batSector.writeBigUInt64LE(BigInt(newBlock) | 6n, 5 * 8);
    const e1 = logEntry(7n, logGuid, [{ kind: 'data', offset: blockOf(0) + 4096, sector }, { kind: 'zero', offset: blockOf(2) + 8192, length: 8192 }], grown.length);
    const e2 = logEntry(8n, logGuid, [{ kind: 'data', offset: batSectorAt, sector: batSector }], grown.length);
    e1.copy(grown, logOffset);
    e2.copy(grown, logOffset + e1.length);
    await writeFile(img, grown);
    return img;
  }
  return { currentHeaderSlot, fixChecksum, regionEntry, setLogGuid, logEntry, makeDirtyVhdx };
}
