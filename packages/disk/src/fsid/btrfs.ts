/** btrfs: the primary superblock at 64 KiB (magic "_BHRfS_M"; btrfs_super_block in the kernel's uapi). */
import { type Prober, view, ascii, cString, uuidString } from './model.js';

const SB = 0x10000;
const DEV_ITEM = 0xc9;
const DEV_ITEM_UUID = DEV_ITEM + 66;

export const probeBtrfs: Prober = (ctx) => {
  const sb = ctx.at(SB, 4096);
  if (!sb || ascii(sb.subarray(0x40, 0x48)) !== '_BHRfS_M') return null;
  const v = view(sb);
  const label = cString(sb.subarray(0x12b, 0x12b + 256));
  return {
    type: 'btrfs', usage: 'filesystem',
    ...(label ? { label } : {}),
    uuid: uuidString(sb.subarray(0x20, 0x30)),
    uuidSub: uuidString(sb.subarray(DEV_ITEM_UUID, DEV_ITEM_UUID + 16)),
    blockSize: v.getUint32(0x90, true),
    size: Number(v.getBigUint64(0x70, true)),
  };
};
