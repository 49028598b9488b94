/**
 * What reading a vmdk sparse extent as it streams in needs (streamed/): its header must place
 * the grain directory and tables before the grains ("Virtual Disk Format 5.0", hosted sparse
 * extent: overHead sectors of metadata, then grains). qemu-img writes streamOptimized images
 * that way (the directory and tables preallocated after the embedded descriptor); VMware's own
 * streams put them after the grains, with the directory's offset in the footer (GD_AT_END),
 * which only the end of the stream gives: those are staged.
 */
import { SECTOR, isSparseHeader, parseSparseHeader } from './header.js';

/** The bytes before the first grain (the header, descriptor and tables), or why the extent is staged. */
export function vmdkStreamingPlan(head: Uint8Array): { metadataEnd: number } | { obstacle: string } {
  if (!isSparseHeader(head) || head.length < SECTOR) return { obstacle: 'not a vmdk sparse extent' };
  let h;
  try {
    h = parseSparseHeader(head);
  } catch (e) {
    return { obstacle: `its header: ${(e as Error).message}` };
  }
  if (h.capacity === 0) return { obstacle: 'a descriptor in a sparse header' };
  if (h.gdOffset < 0) return { obstacle: 'the grain directory at the end (GD_AT_END)' };
  const end = h.overHead * SECTOR;
  if (!(h.overHead > 0) || h.gdOffset * SECTOR >= end || h.rgdOffset * SECTOR >= end) return { obstacle: 'grain tables after the grains' };
  return { metadataEnd: end };
}
