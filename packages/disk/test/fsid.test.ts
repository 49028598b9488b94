import test from 'node:test';
import assert from 'node:assert/strict';
import { readFile, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  openImage, closeChain, openPartition, identifyFilesystem, blkidFields, RawImage, MemorySource, isDiskError,
} from '@diskhub/disk';
import { tempDir, needs, run, runOk, hasTool } from '@diskhub/testkit';

const MiB = 1 << 20;

/** `blkid -p -o export` as a record, values unescaped, without the keys that describe the file rather than the content. */
async function blkid(path: string, offset?: number, size?: number): Promise<Record<string, string>> {
  const args = ['-p', '-o', 'export'];
  if (offset !== undefined) args.push('-O', String(offset));
  if (size !== undefined) args.push('-S', String(size));
  const out = await runOk('blkid', [...args, path]);
  const fields: Record<string, string> = {};
  for (const line of out.trim().split('\n')) {
    const eq = line.indexOf('=');
    const key = line.slice(0, eq);
    if (['DEVNAME', 'LABEL_FATBOOT', 'SYSTEM_ID', 'APPLICATION_ID', 'PUBLISHER_ID', 'VOLUME_SET_ID', 'DATA_PREPARER_ID', 'BOOT_SYSTEM_ID'].includes(key) || key.startsWith('PART_ENTRY_') || key.startsWith('PT')) continue;
    fields[key] = line.slice(eq + 1).replace(/\\(.)/g, '$1');
  }
  return fields;
}

async function sparseFile(path: string, size: number): Promise<string> {
  await writeFile(path, '');
  await truncate(path, size);
  return path;
}

/** The size each filesystem's own tool reports (bytes), to check ours against. */
const PEER_SIZE: Record<string, (file: string) => Promise<number>> = {
  ext: async (f) => {
    const h = await runOk('dumpe2fs', ['-h', f]);
    return Number(/^Block count:\s+(\d+)/m.exec(h)![1]) * Number(/^Block size:\s+(\d+)/m.exec(h)![1]);
  },
  xfs: async (f) => {
    const h = await runOk('xfs_db', ['-r', '-c', 'sb 0', '-c', 'p dblocks blocksize', f]);
    return Number(/dblocks = (\d+)/.exec(h)![1]) * Number(/blocksize = (\d+)/.exec(h)![1]);
  },
  btrfs: async (f) => Number(/^total_bytes\s+(\d+)/m.exec(await runOk('btrfs', ['inspect-internal', 'dump-super', f]))![1]),
  vfat: async (f) => {
    const h = (await run('fsck.fat', ['-nv', f])).stdout;
    return Number(/(\d+) sectors total/.exec(h)![1]) * Number(/(\d+) bytes per logical sector/.exec(h)![1]);
  },
};

interface FsCase { name: string; tools: string[]; size: number; make: (file: string) => Promise<unknown>; expect: Record<string, string> }

const CASES: FsCase[] = [
  { name: 'ext2', tools: ['mkfs.ext2'], size: 8 * MiB, make: (f) => runOk('mkfs.ext2', ['-q', '-F', '-L', 'old-ext2', '-U', '3a1f7e2c-0d4b-4c2e-9a55-0123456789ab', f]), expect: { TYPE: 'ext2', LABEL: 'old-ext2', UUID: '3a1f7e2c-0d4b-4c2e-9a55-0123456789ab' } },
  { name: 'ext3', tools: ['mkfs.ext3'], size: 8 * MiB, make: (f) => runOk('mkfs.ext3', ['-q', '-F', '-L', 'journalled', f]), expect: { TYPE: 'ext3', SEC_TYPE: 'ext2' } },
  { name: 'ext4', tools: ['mkfs.ext4'], size: 16 * MiB, make: (f) => runOk('mkfs.ext4', ['-q', '-F', '-b', '4096', '-O', '64bit,metadata_csum', '-L', 'rootfs', '-U', 'b7c1d2e3-f405-4617-8829-3a4b5c6d7e8f', f]), expect: { TYPE: 'ext4', LABEL: 'rootfs', BLOCK_SIZE: '4096' } },
  { name: 'xfs', tools: ['mkfs.xfs'], size: 300 * MiB, make: (f) => runOk('mkfs.xfs', ['-q', '-f', '-L', 'xdata', f]), expect: { TYPE: 'xfs', LABEL: 'xdata' } },
  { name: 'btrfs', tools: ['mkfs.btrfs'], size: 128 * MiB, make: (f) => runOk('mkfs.btrfs', ['-q', '-f', '-L', 'pool', f]), expect: { TYPE: 'btrfs', LABEL: 'pool' } },
  { name: 'fat12', tools: ['mkfs.vfat'], size: 2 * MiB, make: (f) => runOk('mkfs.vfat', ['-F', '12', '-n', 'SMALL', '-i', '0badcafe', f]), expect: { TYPE: 'vfat', VERSION: 'FAT12', UUID: '0BAD-CAFE', LABEL: 'SMALL' } },
  { name: 'fat16', tools: ['mkfs.vfat'], size: 32 * MiB, make: (f) => runOk('mkfs.vfat', ['-F', '16', f]), expect: { TYPE: 'vfat', VERSION: 'FAT16' } },
  { name: 'fat32', tools: ['mkfs.vfat'], size: 64 * MiB, make: (f) => runOk('mkfs.vfat', ['-F', '32', '-n', 'EFI BOOT', f]), expect: { TYPE: 'vfat', VERSION: 'FAT32', LABEL: 'EFI BOOT' } },
  { name: 'ntfs', tools: ['mkntfs'], size: 16 * MiB, make: (f) => runOk('mkntfs', ['-q', '-F', '-f', '-L', 'Windows Data', f]), expect: { TYPE: 'ntfs', LABEL: 'Windows Data' } },
  { name: 'swap', tools: ['mkswap'], size: 8 * MiB, make: (f) => runOk('mkswap', ['-L', 'swap0', '-U', '0f0e0d0c-0b0a-4908-8706-050403020100', f]), expect: { TYPE: 'swap', VERSION: '1', LABEL: 'swap0' } },
  { name: 'ext4-nojournal', tools: ['mkfs.ext4'], size: 8 * MiB, make: (f) => runOk('mkfs.ext4', ['-q', '-F', '-O', '^has_journal', f]), expect: { TYPE: 'ext4' } },
  { name: 'ext2-minimal', tools: ['mkfs.ext2'], size: 4 * MiB, make: (f) => runOk('mkfs.ext2', ['-q', '-F', '-O', '^resize_inode,^dir_index', f]), expect: { TYPE: 'ext2' } },
  { name: 'jbd', tools: ['mke2fs'], size: 8 * MiB, make: (f) => runOk('mke2fs', ['-q', '-F', '-O', 'journal_dev', '-b', '4096', '-L', 'journal', f]), expect: { TYPE: 'jbd', LABEL: 'journal' } },
  { name: 'xfs-v4', tools: ['mkfs.xfs'], size: 300 * MiB, make: (f) => runOk('mkfs.xfs', ['-q', '-f', '-m', 'crc=0', f]), expect: { TYPE: 'xfs' } },
  { name: 'fat-nolabel', tools: ['mkfs.vfat'], size: 16 * MiB, make: (f) => runOk('mkfs.vfat', [f]), expect: { TYPE: 'vfat' } },
  { name: 'ntfs-nolabel', tools: ['mkntfs'], size: 8 * MiB, make: (f) => runOk('mkntfs', ['-q', '-F', '-f', f]), expect: { TYPE: 'ntfs' } },
  { name: 'luks1', tools: ['cryptsetup'], size: 8 * MiB, make: (f) => runOk('cryptsetup', ['luksFormat', '-q', '--type', 'luks1', '--pbkdf-force-iterations', '1000', '-d', '-', f], { input: 'secret' }), expect: { TYPE: 'crypto_LUKS', VERSION: '1' } },
  { name: 'luks2', tools: ['cryptsetup'], size: 24 * MiB, make: (f) => runOk('cryptsetup', ['luksFormat', '-q', '--type', 'luks2', '--label', 'vault', '--subsystem', 'test', '--pbkdf', 'pbkdf2', '--pbkdf-force-iterations', '1000', '-d', '-', f], { input: 'secret' }), expect: { TYPE: 'crypto_LUKS', VERSION: '2', LABEL: 'vault' } },
  { name: 'luks2-primary-wiped', tools: ['cryptsetup', 'dd'], size: 24 * MiB, make: async (f) => {
    await runOk('cryptsetup', ['luksFormat', '-q', '--type', 'luks2', '--label', 'second', '--pbkdf', 'pbkdf2', '--pbkdf-force-iterations', '1000', '-d', '-', f], { input: 'secret' });
    // Wipe the first binary header: blkid (and we) find the LUKS2 secondary header.
    await runOk('dd', ['if=/dev/zero', `of=${f}`, 'bs=4096', 'count=1', 'conv=notrunc', 'status=none']);
  }, expect: { TYPE: 'crypto_LUKS', VERSION: '2', LABEL: 'second' } },
];

test('filesystems made by mkfs.* identified on their own and inside GPT partitions, as blkid -p reports them', needs('sgdisk', 'blkid', 'dd'), async (t) => {
  const dir = await tempDir(t);
  const cases = CASES.filter((c) => c.tools.every(hasTool) || process.env.CI === 'true');
  // One GPT disk with a partition per filesystem, each filesystem spliced in with dd.
  const disk = await sparseFile(join(dir, 'disk.img'), cases.reduce((s, c) => s + c.size + MiB, 2 * MiB));
  const sgdiskArgs = cases.flatMap((c, i) => [`-n${i + 1}:0:+${c.size / 1024}K`, `-c${i + 1}:${c.name}`]);
  await runOk('sgdisk', [...sgdiskArgs, disk]);
  const img = await openImage(disk, { format: 'raw' });
  t.after(() => closeChain(img));
  const peers: Record<string, string>[] = [];
  for (const [i, c] of cases.entries()) {
    const file = await sparseFile(join(dir, `${c.name}.fs`), c.size);
    await c.make(file);
    const alone = await blkid(file);
    for (const [k, v] of Object.entries(c.expect)) assert.equal(alone[k], v, `${c.name}: blkid ${k} (the case's own expectation)`);
    // Our reading of the file itself.
    const fsImg = await openImage(file, { format: 'raw' });
    try {
      const info = await identifyFilesystem(fsImg);
      assert.ok(info, `${c.name}: identified`);
      assert.deepEqual(blkidFields(info), alone, c.name);
      const peerSize = PEER_SIZE[info.type.startsWith('ext') ? 'ext' : info.type];
      if (peerSize) assert.equal(info.size, await peerSize(file), `${c.name}: size as its own tool reports it`);
    } finally { await closeChain(fsImg); }
    const part = await openPartition(img, i + 1);
    await runOk('dd', [`if=${file}`, `of=${disk}`, 'bs=64K', `seek=${part.start / 65536}`, 'conv=notrunc,sparse', 'status=none']);
    peers.push(await blkid(disk, part.start, part.size));
  }
  for (const [i, c] of cases.entries()) {
    const part = await openPartition(img, i + 1);
    const info = await identifyFilesystem(part);
    assert.ok(info, `${c.name} in partition ${i + 1}`);
    assert.deepEqual(blkidFields(info), peers[i], `${c.name} in partition ${i + 1}: same as blkid -p -O`);
    if (c.name.startsWith('ext')) assert.equal(info.size, c.size);
  }
});

test('iso9660 from genisoimage', needs('genisoimage', 'blkid'), async (t) => {
  const dir = await tempDir(t);
  await writeFile(join(dir, 'hello.txt'), 'hello\n');
  for (const [name, args] of [['plain', ['-V', 'INSTALL_CD']], ['joliet', ['-J', '-V', 'Mixed Case Label']]] as const) {
    const iso = join(dir, `${name}.iso`);
    await runOk('genisoimage', ['-quiet', ...args, '-o', iso, join(dir, 'hello.txt')]);
    const img = await openImage(iso, { format: 'raw' });
    try {
      const info = (await identifyFilesystem(img))!;
      assert.deepEqual(blkidFields(info), await blkid(iso), name);
    } finally { await closeChain(img); }
  }
});

/** A small deterministic generator, so a failure can be replayed. */
function prng(seed: number) {
  return () => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed; };
}

test('damaged superblocks: identification returns a result or nothing, never throws anything but a DiskError', needs('mkfs.ext4', 'mkfs.vfat', 'mkntfs', 'mkswap'), async (t) => {
  const dir = await tempDir(t);
  const heads: Uint8Array[] = [];
  for (const c of CASES.filter((x) => ['ext4', 'fat16', 'fat32', 'ntfs', 'swap', 'btrfs'].includes(x.name) && x.tools.every(hasTool))) {
    const file = await sparseFile(join(dir, `${c.name}.fs`), Math.min(c.size, 16 * MiB));
    try { await c.make(file); } catch { continue; } // btrfs wants more room than 16 MiB on some versions
    heads.push(new Uint8Array(await readFile(file)).subarray(0, 2 * MiB));
  }
  const rand = prng(42);
  for (const head of heads) {
    for (let round = 0; round < 150; round++) {
      const bytes = head.slice();
      const flips = 1 + (rand() % 64);
      // Aim at the places superblocks live: the first sectors, 1 KiB, 64 KiB.
      for (let i = 0; i < flips; i++) {
        const region = [0, 1024, 0x10000, 0x10000 + 0x100][rand() % 4]!;
        bytes[region + (rand() % 512)] = rand() & 0xff;
      }
      const dev = new RawImage(new MemorySource(bytes), bytes.length, false);
      try {
        await identifyFilesystem(dev);
      } catch (e) {
        assert.ok(isDiskError(e), `round ${round}: ${e}`);
      }
    }
  }
  // Tiny and empty devices.
  for (const size of [0, 1, 512, 1024, 4095]) {
    assert.equal(await identifyFilesystem(new RawImage(new MemorySource(new Uint8Array(size)), size, false)), null);
  }
});
