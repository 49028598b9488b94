/**
 * The ext2/3/4 reader against real peers (this file: the layouts with indirect block maps; ext.test.ts the rest): filesystems made by mkfs.ext4 -d from a source tree
 * (every kind of file, see testkit's makeSourceTree) in each layout mke2fs makes — extents or
 * indirect blocks, 1 KiB blocks, 64bit, meta_bg, inline data, metadata_csum or gdt_csum,
 * 128-byte inodes — with directories indexed by e2fsck -D (htree), nanosecond times and
 * unwritten extents set by debugfs. Every file must read back as put in, and every field
 * `find -printf` shows of a read-only loop mount must match. Hostile images end in a typed error.
 */
import { test } from 'node:test';
import { join } from 'node:path';
import { tempDir, needs, makeSourceTree } from '@diskhub/testkit';
import { VARIANTS, checkVariant } from './ext-peer.js';

test('ext: mkfs.ext4 -d filesystems (indirect blocks) read back as put in, and as a read-only loop mount shows them', needs('mkfs.ext4', 'e2fsck', 'debugfs', 'find'), async (t) => {
  const dir = await tempDir(t);
  const src = join(dir, 'src');
  await makeSourceTree(src);
  for (const v of VARIANTS.filter((x) => !x.extents)) await t.test(v.name, () => checkVariant(dir, src, v));
});
