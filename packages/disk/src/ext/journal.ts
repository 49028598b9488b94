/**
 * jbd2 journal recovery, read-side: the committed transactions of an ext3/ext4 journal that
 * needs recovery are applied in memory — an overlay of filesystem block → journal block —
 * so that reads see what the kernel (or e2fsck) would after replaying it, and the image is
 * never written. Source: the kernel's Documentation/filesystems/ext4/journal.rst ("Journal
 * (jbd2)", cited as §J) and include/linux/jbd2.h for the structures, all big-endian.
 *
 * As fs/jbd2/recovery.c does it: a scan from s_start with the expected sequence number finds
 * the transactions whose commit block is there (and whose checksums hold: descriptor and
 * revoke block tails, commit blocks — csum v2/v3); revoke records of those transactions are
 * gathered (a block revoked in transaction T is not replayed from T or any earlier one); then
 * each committed transaction's tagged blocks are mapped in order, later copies winning, a
 * block whose tag checksum fails being skipped. Escaped blocks (their first four bytes were
 * the journal magic) get the magic back. The scan is bounded by the journal's length.
 */
import type { BlockDevice, Extent } from '../blockdev.js';
import { crc32cRegister } from '../crc32c.js';
import { DiskError } from '../errors.js';
import { bytes, defineStruct, u32be, u8 } from '../struct.js';

export const JBD2_MAGIC = 0xc03b3998;
// Block types (§J "Block Header").
const DESCRIPTOR_BLOCK = 1;
const COMMIT_BLOCK = 2;
const SUPERBLOCK_V1 = 3;
const SUPERBLOCK_V2 = 4;
const REVOKE_BLOCK = 5;

// Features (§J "Super Block").
const INCOMPAT_REVOKE = 0x1;
const INCOMPAT_64BIT = 0x2;
const INCOMPAT_ASYNC_COMMIT = 0x4;
const INCOMPAT_CSUM_V2 = 0x8;
const INCOMPAT_CSUM_V3 = 0x10;
const INCOMPAT_FAST_COMMIT = 0x20;
const INCOMPAT_KNOWN = INCOMPAT_REVOKE | INCOMPAT_64BIT | INCOMPAT_ASYNC_COMMIT | INCOMPAT_CSUM_V2 | INCOMPAT_CSUM_V3 | INCOMPAT_FAST_COMMIT;

// Tag flags (§J "Descriptor Block").
const FLAG_ESCAPE = 1;
const FLAG_SAME_UUID = 2;
const FLAG_LAST_TAG = 8;

const HEADER_SIZE = 12;
/** journal_superblock_t (the fields recovery reads). */
const JSB = defineStruct('jbd2 superblock', 1024, {
  magic: [0x0, u32be],
  blocktype: [0x4, u32be],
  sequence: [0x8, u32be],
  blockSize: [0xc, u32be],
  maxLen: [0x10, u32be],
  first: [0x14, u32be],
  startSequence: [0x18, u32be],
  start: [0x1c, u32be],
  errno: [0x20, u32be],
  featureCompat: [0x24, u32be],
  featureIncompat: [0x28, u32be],
  featureRoCompat: [0x2c, u32be],
  uuid: [0x30, bytes(16)],
  checksumType: [0x50, u8],
  checksum: [0xfc, u32be],
});
/** commit_header: h_chksum[0] holds the csum v2/v3 checksum. */
const COMMIT_CHECKSUM_OFF = 16;

/** Where a replayed filesystem block's bytes are: a journal block, and whether its magic was escaped. */
export interface LoggedBlock { journalBlock: number; escaped: boolean }

export interface JournalReplay {
  /** Filesystem block → its latest committed copy in the journal. */
  blocks: Map<number, LoggedBlock>;
  transactions: number;
  revoked: number;
  /** What recovery met that a user should know (tag checksum failures, fast commits left out). */
  notes: string[];
}

const corrupt = (m: string) => new DiskError('ECORRUPT', `ext: journal: ${m}`);

interface Transaction { tags: { block: number; journalBlock: number; flags: number; checksum: number }[]; revokes: number[]; sequence: number }

/**
 * Replay the journal read through `readJournal` (journal block `n` into a buffer of one
 * filesystem block) in memory. `blockSize` and `blocksCount` are the filesystem's; a journal
 * whose s_start is 0 is clean (nothing to replay).
 */
export async function replayJournal(readJournal: (n: number, buf: Uint8Array) => Promise<void>, journalBlocks: number, blockSize: number, blocksCount: number): Promise<JournalReplay> {
  const sbBlock = new Uint8Array(blockSize);
  await readJournal(0, sbBlock);
  const sb = JSB.decode(sbBlock);
  if (sb.magic !== JBD2_MAGIC || (sb.blocktype !== SUPERBLOCK_V1 && sb.blocktype !== SUPERBLOCK_V2)) throw corrupt('no journal superblock');
  if (sb.blockSize !== blockSize) throw corrupt(`block size ${sb.blockSize}, the filesystem's is ${blockSize}`);
  if (sb.maxLen > journalBlocks || sb.first === 0 || sb.first >= sb.maxLen) throw corrupt(`${sb.maxLen} blocks from ${sb.first} in a journal of ${journalBlocks}`);
  const incompat = sb.blocktype === SUPERBLOCK_V2 ? sb.featureIncompat : 0;
  if (incompat & ~INCOMPAT_KNOWN) throw new DiskError('EUNSUPPORTED', `ext: journal: incompatible features 0x${(incompat & ~INCOMPAT_KNOWN).toString(16)}`);
  const csum = (incompat & (INCOMPAT_CSUM_V2 | INCOMPAT_CSUM_V3)) !== 0;
  const csumV3 = (incompat & INCOMPAT_CSUM_V3) !== 0;
  const bit64 = (incompat & INCOMPAT_64BIT) !== 0;
  const notes: string[] = [];
  if (csum) {
    const copy = sbBlock.slice(0, 1024);
    copy.fill(0, 0xfc, 0x100);
    if (crc32cRegister(0xffffffff, copy) !== sb.checksum) throw corrupt('superblock checksum does not match');
  }
  const replay: JournalReplay = { blocks: new Map(), transactions: 0, revoked: 0, notes };
  if (sb.start === 0) return replay;
  if (sb.start < sb.first || sb.start >= sb.maxLen) throw corrupt(`log start ${sb.start} outside blocks ${sb.first}-${sb.maxLen - 1}`);
  // jbd2_chksum(j, ~0, uuid): the seed every block checksum starts from.
  const seed = crc32cRegister(0xffffffff, sb.uuid);
  const be32 = (b: Uint8Array, at: number) => new DataView(b.buffer, b.byteOffset + at, 4).getUint32(0, false);
  const tailOk = (b: Uint8Array): boolean => {
    const copy = b.slice();
    copy.fill(0, blockSize - 4);
    return crc32cRegister(seed, copy) === be32(b, blockSize - 4);
  };
  const tagBytes = csumV3 ? 16 : 8 + (csum ? 2 : 0) + (bit64 ? 4 : 0);
  const next = (n: number) => (n + 1 >= sb.maxLen ? sb.first : n + 1);

  // Pass 1: the committed transactions, in order (recovery.c PASS_SCAN).
  const committed: Transaction[] = [];
  let current: Transaction = { tags: [], revokes: [], sequence: sb.startSequence };
  let at = sb.start;
  const b = new Uint8Array(blockSize);
  for (let steps = 0; steps < sb.maxLen; steps++) {
    await readJournal(at, b);
    if (be32(b, 0) !== JBD2_MAGIC || be32(b, 8) !== current.sequence) break;
    const type = be32(b, 4);
    if (type === DESCRIPTOR_BLOCK) {
      if (csum && !tailOk(b)) { notes.push(`descriptor block of transaction ${current.sequence} has a bad checksum: the log ends there`); break; }
      const end = blockSize - (csum ? 4 : 0);
      let p = HEADER_SIZE;
      let data = at;
      let last = false;
      let tags = 0;
      while (!last && p + tagBytes <= end) {
        const lo = be32(b, p);
        const flags = csumV3 ? be32(b, p + 4) : new DataView(b.buffer, b.byteOffset + p + 6, 2).getUint16(0, false);
        const hi = bit64 ? be32(b, p + 8) : 0;
        const checksum = csumV3 ? be32(b, p + 12) : csum ? new DataView(b.buffer, b.byteOffset + p + 4, 2).getUint16(0, false) : 0;
        data = next(data);
        current.tags.push({ block: hi * 2 ** 32 + lo, journalBlock: data, flags, checksum });
        tags++;
        if (current.tags.length > sb.maxLen) throw corrupt('more tags than the journal has blocks');
        p += tagBytes + (flags & FLAG_SAME_UUID ? 0 : 16);
        last = (flags & FLAG_LAST_TAG) !== 0;
      }
      steps += tags;
      at = next(data);
      continue;
    }
    if (type === REVOKE_BLOCK) {
      if (csum && !tailOk(b)) { notes.push(`revoke block of transaction ${current.sequence} has a bad checksum: the log ends there`); break; }
      const count = be32(b, HEADER_SIZE);
      const size = bit64 ? 8 : 4;
      if (count < 16 || count > blockSize - (csum ? 4 : 0)) throw corrupt(`revoke block of ${count} bytes`);
      for (let p = 16; p + size <= count; p += size) current.revokes.push(bit64 ? be32(b, p) * 2 ** 32 + be32(b, p + 4) : be32(b, p));
      at = next(at);
      continue;
    }
    if (type === COMMIT_BLOCK) {
      if (csum) {
        const copy = b.slice();
        copy.fill(0, COMMIT_CHECKSUM_OFF, COMMIT_CHECKSUM_OFF + 4);
        if (crc32cRegister(seed, copy) !== be32(b, COMMIT_CHECKSUM_OFF)) { notes.push(`commit block of transaction ${current.sequence} has a bad checksum: the log ends there`); break; }
      }
      committed.push(current);
      current = { tags: [], revokes: [], sequence: (current.sequence + 1) >>> 0 };
      at = next(at);
      continue;
    }
    break;
  }
  if (incompat & INCOMPAT_FAST_COMMIT) notes.push('fast-commit blocks are not replayed');

  // Pass 2: revoke records — a block revoked in transaction i is not replayed from transactions up to i (PASS_REVOKE).
  const revokedUpTo = new Map<number, number>();
  for (const [i, t] of committed.entries()) for (const block of t.revokes) revokedUpTo.set(block, i);
  replay.revoked = revokedUpTo.size;

  // Pass 3: the tagged blocks, later transactions' copies winning (PASS_REPLAY).
  const data = new Uint8Array(blockSize);
  const seqBytes = new Uint8Array(4);
  for (const [i, t] of committed.entries()) {
    new DataView(seqBytes.buffer).setUint32(0, t.sequence, false);
    for (const tag of t.tags) {
      const r = revokedUpTo.get(tag.block);
      if (r !== undefined && r >= i) continue;
      if (tag.block >= blocksCount) throw corrupt(`transaction ${t.sequence} logs block ${tag.block}, past the filesystem's ${blocksCount}`);
      if (csum) {
        await readJournal(tag.journalBlock, data);
        const sum = crc32cRegister(crc32cRegister(seed, seqBytes), data);
        if ((csumV3 ? sum : sum & 0xffff) !== tag.checksum) {
          notes.push(`block ${tag.block} in transaction ${t.sequence} has a bad checksum and was not replayed`);
          continue;
        }
      }
      replay.blocks.set(tag.block, { journalBlock: tag.journalBlock, escaped: (tag.flags & FLAG_ESCAPE) !== 0 });
    }
  }
  replay.transactions = committed.length;
  return replay;
}

/**
 * The filesystem's device with the replayed blocks laid over it: a read gets the device's
 * bytes, then each replayed block in its range from the journal. The device underneath is its
 * owner's to close.
 */
export class ReplayedDevice implements BlockDevice {
  readonly size: number;
  private readonly sorted: number[];

  constructor(
    private readonly base: BlockDevice,
    private readonly blockSize: number,
    private readonly replay: JournalReplay,
    private readonly readJournal: (n: number, buf: Uint8Array) => Promise<void>,
  ) {
    this.size = base.size;
    this.sorted = [...replay.blocks.keys()].sort((a, b) => a - b);
  }

  async read(buf: Uint8Array, offset: number): Promise<void> {
    await this.base.read(buf, offset);
    const bs = this.blockSize;
    const first = Math.floor(offset / bs);
    const end = offset + buf.length;
    let lo = 0;
    for (let hi = this.sorted.length; lo < hi; ) {
      const mid = (lo + hi) >> 1;
      if (this.sorted[mid]! < first) lo = mid + 1;
      else hi = mid;
    }
    const block = new Uint8Array(bs);
    for (let i = lo; i < this.sorted.length && this.sorted[i]! * bs < end; i++) {
      const n = this.sorted[i]!;
      const logged = this.replay.blocks.get(n)!;
      await this.readJournal(logged.journalBlock, block);
      if (logged.escaped) new DataView(block.buffer).setUint32(0, JBD2_MAGIC, false);
      const from = Math.max(offset, n * bs);
      const to = Math.min(end, (n + 1) * bs);
      buf.set(block.subarray(from - n * bs, to - n * bs), from - offset);
    }
  }

  blockStatus(offset: number, length: number): AsyncIterable<Extent> {
    return this.base.blockStatus(offset, length);
  }

  async close(): Promise<void> {}
}
