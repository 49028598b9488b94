/**
 * ext4 journal replay in memory against e2fsck: a filesystem is changed through a loop mount
 * (a directory of 300 entries made and removed — revoke records —, files and a directory
 * made, in three committed transactions) and its image copied while still mounted; the blocks
 * the journal logs (but the superblock) are then set back to what they were before the mount (as if the kernel had
 * not written any back yet: the journal alone holds the changes, which debugfs — reading
 * without replay — confirms). The reader must show exactly what a read-only mount of the same
 * image shows after `e2fsck -fy` replayed the journal, and must leave the image unchanged.
 * Both jbd2 layouts mke2fs makes: 64-bit tags with csum v3, and 32-bit tags without checksums.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { copyFile, mkdir, readFile, writeFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { tempDir, needs, needsLoopDevices, runOk, run, withLoopMount } from '@diskhub/testkit';
import { openFilesystem } from '../src/index.js';
import { directoryTree, openRaw, readerTree, sorted } from './fs-tree.js';

const VARIANTS = [
  { name: '64-bit tags, csum v3 (metadata_csum)', args: ['-t', 'ext4'], features: /journal_64bit journal_checksum_v3/ },
  { name: '32-bit tags, no checksums', args: ['-t', 'ext4', '-O', '^metadata_csum,^64bit'], features: /Journal features:\s+\(none\)/ },
];

for (const v of VARIANTS) {
  test(`ext journal replay (${v.name}): the files as a mount shows them after e2fsck replayed the journal`, { ...needs('mkfs.ext4', 'e2fsck', 'debugfs', 'dumpe2fs'), ...needsLoopDevices() }, async (t) => {
    const dir = await tempDir(t);
    const img = join(dir, 'fs.img');
    const base = join(dir, 'base.img');
    const crash = join(dir, 'crash.img');
    await runOk('mkfs.ext4', ['-q', '-F', ...v.args, img, '64M']);
    await copyFile(img, base);
    const mnt = join(dir, 'mnt');
    await mkdir(mnt);
    await runOk('mount', ['-o', 'loop', img, mnt]);
    try {
      await mkdir(join(mnt, 'gone'));
      for (let i = 0; i < 300; i++) await writeFile(join(mnt, 'gone', `file-with-a-long-name-${i}`), `gone ${i}\n`);
      await runOk('sync', []);
      await rm(join(mnt, 'gone'), { recursive: true });
      await runOk('sync', []);
      await mkdir(join(mnt, 'kept'));
      for (let i = 0; i < 50; i++) await writeFile(join(mnt, 'kept', `f${i}`), `file ${i}\n`);
      await writeFile(join(mnt, 'big'), Buffer.alloc(200_000).map((_, i) => (i * 31) & 0xff));
      await runOk('sync', []);
      // The image as a crash would leave it: everything committed, mounted still.
      await copyFile(img, crash);
    } finally {
      await run('umount', [mnt]);
    }
    const head = await runOk('dumpe2fs', ['-h', crash]);
    assert.match(head, /needs_recovery/);
    assert.match(head, v.features);
    const blockSize = Number(/Block size:\s+(\d+)/.exec(head)![1]);
    const log = await runOk('debugfs', ['-R', 'logdump -a', crash]);
    const logged = [...log.matchAll(/FS block (\d+) logged at journal block/g)].map((m) => Number(m[1]));
    assert.ok(logged.length > 50, `${logged.length} blocks logged`);
    assert.ok([...log.matchAll(/Revoke FS block/g)].length > 0, 'the removal left revoke records');
    assert.ok([...log.matchAll(/type 2 \(commit block\)/g)].length >= 3, 'three transactions or more');
    // The logged blocks as they were before the mount: only the journal has the changes. The
    // primary superblock stays as the mount wrote it (needs_recovery set, as on any crash).
    const bytes = await readFile(crash);
    const before = await readFile(base);
    const superblock = Math.floor(1024 / blockSize);
    for (const b of new Set(logged)) if (b !== superblock) before.copy(bytes, b * blockSize, b * blockSize, (b + 1) * blockSize);
    await writeFile(crash, bytes);
    assert.doesNotMatch(await runOk('debugfs', ['-R', 'ls -p /', crash]), /\/kept\//, 'without replay there is no /kept');

    const fixed = join(dir, 'fixed.img');
    await copyFile(crash, fixed);
    const fsck = await run('e2fsck', ['-fy', fixed]);
    assert.ok(fsck.code <= 1, fsck.stdout + fsck.stderr);
    const kernel = await withLoopMount(fixed, join(dir, 'ro'), () => directoryTree(join(dir, 'ro')));
    assert.ok(kernel.has('/kept/f49') && kernel.has('/big') && !kernel.has('/gone'));

    const dev = await openRaw(crash);
    t.after(() => dev.close());
    const fs = await openFilesystem(dev);
    assert.match(fs.warnings.join('\n'), /journal needed recovery .*: [3-9] committed transactions replayed in memory, the image is unchanged/);
    assert.deepEqual(sorted(await readerTree(fs)), sorted(kernel));
    const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
    assert.equal(sha(await readFile(crash)), sha(bytes), 'the image is unchanged');
  });
}

/** debugfs's journal writer (jo/jw/jc): transactions written as asked, for the cases a mount rarely makes on demand. */
const WRITER_VARIANTS = [
  { name: '64-bit tags, no checksums', mkfs: ['-O', '^metadata_csum'], open: 'jo' },
  { name: '64-bit tags, csum v3', mkfs: [], open: 'jo -c' },
  { name: '32-bit tags', mkfs: ['-O', '^metadata_csum,^64bit'], open: 'jo' },
];

for (const v of WRITER_VARIANTS) {
  test(`ext journal replay (debugfs journal writer, ${v.name}): a revoked block is not replayed, an escaped block gets its magic back, later copies win${v.open === 'jo -c' ? '; a damaged tag or commit checksum as e2fsck takes it' : ''}`, needs('mkfs.ext4', 'e2fsck', 'debugfs'), async (t) => {
    const dir = await tempDir(t);
    const img = join(dir, 'fs.img');
    await runOk('mkfs.ext4', ['-q', '-F', '-t', 'ext4', ...v.mkfs, img, '16M']);
    const put = async (name: string, data: string | Uint8Array) => { await writeFile(join(dir, name), data); return join(dir, name); };
    await runOk('debugfs', ['-w', '-f', '-', img], {
      input: `write ${await put('orig', 'original\n')} target\nwrite ${await put('sec', 's'.repeat(3000))} second\nwrite ${await put('third', 't'.repeat(3000))} third\n`,
    });
    const block = async (p: string) => Number((await runOk('debugfs', ['-R', `bmap ${p} 0`, img])).trim());
    const [b1, b2, b3] = [await block('target'), await block('second'), await block('third')];
    const x = await put('x', Buffer.alloc(1024, 'X'));
    const y = await put('y', Buffer.alloc(1024, 'Y'));
    const y2 = await put('y2', Buffer.alloc(1024, 'W'));
    // Starts with the journal's magic: written escaped.
    const z = await put('z', Buffer.concat([Buffer.from([0xc0, 0x3b, 0x39, 0x98]), Buffer.alloc(1020, 'Z')]));
    // target's block logged, then revoked; second's block logged twice; third's escaped.
    const script = [v.open, `jw -b ${b1} ${x}`, `jw -r ${b1} ${x}`, `jw -b ${b2} ${y}`, `jw -b ${b2} ${y2}`, `jw -b ${b3} ${z}`, 'jc'];
    await runOk('debugfs', ['-w', '-f', '-', img], { input: script.join('\n') + '\n' });
    const log = await runOk('debugfs', ['-R', 'logdump -a', img]);
    assert.match(log, new RegExp(`Revoke FS block ${b1}`));
    assert.match(log, new RegExp(`FS block ${b3} logged at journal block \\d+ \\(flags 0x9\\)`), 'escaped and last tag');

    const fixed = join(dir, 'fixed.img');
    await copyFile(img, fixed);
    const fsck = await run('e2fsck', ['-fy', fixed]);
    assert.ok(fsck.code <= 1, fsck.stdout + fsck.stderr);
    const dev = await openRaw(img);
    t.after(() => dev.close());
    const fs = await openFilesystem(dev);
    assert.match(fs.warnings.join('\n'), /5 committed transactions replayed in memory/);
    const ours = await readerTree(fs);
    const fixedDev = await openRaw(fixed);
    t.after(() => fixedDev.close());
    assert.deepEqual(sorted(ours), sorted(await readerTree(await openFilesystem(fixedDev))));
    // And e2fsck's result as debugfs reads it: the revoke honoured, the last copy, the magic restored.
    const cat = async (p: string) => {
      await runOk('debugfs', ['-R', `dump ${p} ${join(dir, 'out')}`, fixed]);
      return readFile(join(dir, 'out'));
    };
    assert.equal((await cat('target')).toString(), 'original\n');
    assert.equal((await cat('second')).subarray(0, 1025).toString(), 'W'.repeat(1024) + 's');
    assert.deepEqual([...(await cat('third')).subarray(0, 5)], [0xc0, 0x3b, 0x39, 0x98, 0x5a]);
    const md5 = (b: Uint8Array) => createHash('md5').update(b).digest('hex');
    assert.equal(ours.get('/target')!.md5, md5(Buffer.from('original\n')));
    if (v.open !== 'jo -c') return;

    // With checksums: the escaped block's copy damaged in the journal (its tag checksum fails:
    // recovery skips that block), and separately the last commit block damaged (the log ends before it).
    const journalBlock = async (n: number) => Number((await runOk('debugfs', ['-R', `bmap <8> ${n}`, img])).trim()) * 1024;
    const zAt = await journalBlock(Number(new RegExp(`FS block ${b3} logged at journal block (\\d+)`).exec(log)![1]));
    const commits = [...log.matchAll(/type 2 \(commit block\) at block (\d+)/g)].map((m) => Number(m[1]));
    const lastCommitAt = await journalBlock(commits[commits.length - 1]!);
    const pristine = await readFile(img);
    for (const [what, at, note] of [['a logged block', zAt + 100, /block \d+ in transaction \d+ has a bad checksum and was not replayed/], ['the last commit block', lastCommitAt + 200, /commit block of transaction \d+ has a bad checksum/]] as const) {
      const damaged = join(dir, 'damaged.img');
      const b = Buffer.from(pristine);
      b[at] ^= 0xff;
      await writeFile(damaged, b);
      const repaired = join(dir, 'repaired.img');
      await copyFile(damaged, repaired);
      await run('e2fsck', ['-fy', repaired]);
      const d = await openRaw(damaged);
      const r = await openRaw(repaired);
      try {
        const dfs = await openFilesystem(d);
        assert.match(dfs.warnings.join('\n'), note, what);
        const got = await readerTree(dfs);
        assert.deepEqual(sorted(got), sorted(await readerTree(await openFilesystem(r))), what);
        // Either way /third keeps its bytes from before the journal.
        assert.equal(got.get('/third')!.md5, md5(Buffer.from('t'.repeat(3000))), what);
      } finally {
        await d.close();
        await r.close();
      }
    }
  });
}
