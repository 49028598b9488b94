/**
 * Sparse writes of upload data: whole ZERO_BLOCK-aligned blocks of zeroes are skipped and stay
 * holes of the new file (it is created empty, so a hole reads as zeroes), as qemu-img convert
 * leaves a raw target's zero runs unwritten. A mostly empty raw image then costs its network
 * transfer, not gigabytes of page-cache copies and disk writes. 64 KiB: small enough to catch
 * the free space of a file system image, large enough that the comparison (memcmp, which stops
 * at the first byte that differs, so dense data costs nearly nothing) stays cheap.
 */
export const ZERO_BLOCK = 64 * 1024;
const ZEROES = Buffer.alloc(ZERO_BLOCK);

/**
 * The data of `chunks` (which start at file offset `offset`) as runs to write, zero blocks left
 * out. A block may span chunks; one that the call does not complete (at its end) is written,
 * zeroes or not, so callers write whole blocks per call (UploadHasher's batches are 1 MiB).
 */
export function dataRuns(chunks: Buffer[], offset: number): { offset: number; chunks: Buffer[] }[] {
  const runs: { offset: number; chunks: Buffer[] }[] = [];
  let run: { offset: number; chunks: Buffer[] } | null = null;
  let pos = offset;
  let block: Buffer[] = [];
  let blockBytes = 0;
  const endBlock = () => {
    const zero = blockBytes === ZERO_BLOCK && block.every((p) => p.equals(ZEROES.subarray(0, p.length)));
    if (zero) run = null;
    else if (run) run.chunks.push(...block);
    else runs.push(run = { offset: pos - blockBytes, chunks: [...block] });
    block = [];
    blockBytes = 0;
  };
  for (const chunk of chunks) {
    for (let at = 0; at < chunk.length;) {
      const n = Math.min(chunk.length - at, ZERO_BLOCK - (pos % ZERO_BLOCK));
      block.push(chunk.subarray(at, at + n));
      blockBytes += n;
      pos += n;
      at += n;
      if (pos % ZERO_BLOCK === 0) endBlock();
    }
  }
  if (blockBytes) endBlock();
  // Adjacent pieces of one chunk become one view again, so a run is a few writev entries.
  for (const r of runs) {
    const merged: Buffer[] = [];
    for (const p of r.chunks) {
      const last = merged[merged.length - 1];
      if (last && last.buffer === p.buffer && last.byteOffset + last.length === p.byteOffset) merged[merged.length - 1] = Buffer.from(last.buffer, last.byteOffset, last.length + p.length);
      else merged.push(p);
    }
    r.chunks = merged;
  }
  return runs;
}

/** The chunks left after the first `n` bytes were written (a short writev). */
export function dropBytes(chunks: Buffer[], n: number): Buffer[] {
  let i = 0;
  while (i < chunks.length && n >= chunks[i]!.length) { n -= chunks[i]!.length; i++; }
  const rest = chunks.slice(i);
  if (n > 0 && rest.length) rest[0] = rest[0]!.subarray(n);
  return rest;
}
