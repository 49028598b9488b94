/**
 * `img ls`, `img cat` and `img copy-out` (virt-ls, virt-cat, virt-copy-out) on ext4
 * filesystems made by mkfs.ext4 -d, read through qcow2, vmdk, LUKS qcow2, a GPT partition and
 * an LVM logical volume, against a read-only loop mount of the same filesystem (ls -lan,
 * find, cat) and the files given to mkfs.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { lstat, mkdir, readFile, readlink, stat, symlink, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { needs, tempDir, run, runOk, diskhub, diskhubBin, qemuImg, inactiveLogicalVolumes, needsLoopDevices, loopDevicesUsable, withLoopMount } from '@diskhub/testkit';

const MiB = 1 << 20;

/** A small tree: a root filesystem's marker (/etc/fstab), files, links, a fifo, odd names. */
async function rootTree(dir: string): Promise<string> {
  const src = join(dir, 'src');
  await mkdir(join(src, 'etc'), { recursive: true });
  await writeFile(join(src, 'etc', 'fstab'), 'UUID=x / ext4 defaults 0 1\n');
  await writeFile(join(src, 'etc', 'hostname'), 'guest\n');
  await mkdir(join(src, 'd', 'sub'), { recursive: true });
  await writeFile(join(src, 'd', 'a b,"c"'), 'quoted name\n');
  await writeFile(join(src, 'd', 'sub', 'x'), 'x\n');
  await writeFile(join(src, 'rand'), randomBytes(3 * MiB + 17));
  await writeFile(join(src, 'd', 'exec'), '#!/bin/sh\n', { mode: 0o4755 });
  await symlink('../rand', join(src, 'd', 'link'));
  await symlink('/etc/../../../../outside', join(src, 'escape'));
  await runOk('ln', [join(src, 'rand'), join(src, 'd', 'hard')]);
  await runOk('mkfifo', [join(src, 'd', 'fifo')]);
  await writeFile(join(src, 'd', 'sparse'), 'head');
  await truncate(join(src, 'd', 'sparse'), 24 * MiB);
  return src;
}

async function mkfs(src: string, img: string, extra: string[] = []): Promise<void> {
  await runOk('mkfs.ext4', ['-q', '-F', ...extra, '-d', src, img, ...(extra.some((a) => a.startsWith('offset=')) ? [] : ['32M'])]);
}

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

/** virt-ls -lR's lines for a mounted tree, from find (type, %04o, %10d size, path, -> target). */
async function findLr(mnt: string): Promise<string[]> {
  const out = await runOk('find', [mnt, '-printf', '%y|%m|%s|%P|%l\\n']);
  const letter: Record<string, string> = { f: '-', d: 'd', l: 'l', p: 'p', c: 'c', b: 'b', s: 's' };
  return out.split('\n').filter(Boolean).map((l) => {
    const [y, m, s, p, target] = l.split('|') as [string, string, string, string, string];
    return `${letter[y]} ${m.padStart(4, '0')} ${s.padStart(10)} /${p}${y === 'l' ? ` -> ${target}` : ''}`;
  }).sort();
}

test('img ls / cat: every mode of virt-ls equals the kernel\'s view of the filesystem, the same through raw, qcow2 and vmdk', needs('mkfs.ext4', 'qemu-img', 'find'), async (t) => {
  const dir = await tempDir(t);
  const src = await rootTree(dir);
  const raw = join(dir, 'fs.img');
  await mkfs(src, raw);
  const qcow2 = join(dir, 'fs.qcow2');
  const vmdk = join(dir, 'fs.vmdk');
  await qemuImg('convert', '-O', 'qcow2', raw, qcow2);
  await qemuImg('convert', '-O', 'vmdk', raw, vmdk);

  const lr = await diskhub(['img', 'ls', '-lR', raw, '/']);
  assert.equal(lr.code, 0, lr.stderr);
  assert.equal(lr.stderr, '');
  for (const image of [qcow2, vmdk]) assert.equal((await diskhub(['img', 'ls', '-lR', image, '/'])).stdout, lr.stdout, image);
  // virt-ls's order: the start, then each directory's entries in strcmp order, depth first.
  const paths = lr.stdout.trim().split('\n').map((l) => l.slice(18).split(' -> ')[0]!);
  assert.equal(paths[0], '/');
  assert.ok(paths.indexOf('/d/sub/x') === paths.indexOf('/d/sub') + 1 && paths.indexOf('/d/sub/x') < paths.indexOf('/escape'), 'depth first');

  const csv = await diskhub(['img', 'ls', '-lR', '--csv', '--uids', '--time-t', '--checksum=sha256', qcow2, '/d']);
  assert.equal(csv.code, 0, csv.stderr);
  assert.match(csv.stdout, /^-,0644,12,   0,   0,\d+,\d+,\d+,[0-9a-f]{64},"\/d\/a b,""c"""$/m);
  assert.ok(csv.stdout.includes(`,${sha(await readFile(join(src, 'rand')))},/d/hard\n`));
  // No checksum for what is not a regular file: an empty field in CSV.
  assert.match(csv.stdout, /^l,0777,7,   0,   0,\d+,\d+,\d+,,\/d\/link,\.\.\/rand$/m);
  const human = await diskhub(['img', 'ls', '-lR', '-h', qcow2, '/']);
  assert.match(human.stdout, /^- 0644       3\.0M \/rand$/m);
  const crc = await diskhub(['img', 'ls', '-lR', '--checksum=crc', raw, '/etc']);
  assert.ok(crc.stdout.includes(` ${(await runOk('cksum', [join(src, 'etc', 'fstab')])).split(' ')[0]} /etc/fstab\n`), crc.stdout);

  // virt-cat: byte for byte, through symlinks, binary safe.
  const cat = await run('sh', ['-c', `${JSON.stringify(process.execPath)} ${JSON.stringify(diskhubBin)} img cat ${qcow2} /d/link | sha256sum`]);
  assert.equal(cat.stdout.split(' ')[0], sha(await readFile(join(src, 'rand'))));
  const two = await diskhub(['img', 'cat', vmdk, '/etc/hostname', '/etc/fstab']);
  assert.equal(two.stdout, 'guest\nUUID=x / ext4 defaults 0 1\n');

  // Errors: exit 1 and "diskhub img CMD: ..." as virt-ls prints "virt-ls: error: ...".
  assert.deepEqual(await diskhub(['img', 'cat', raw, '/d']), { code: 1, stdout: '', stderr: 'diskhub img cat: /d: Is a directory\n' });
  assert.deepEqual(await diskhub(['img', 'ls', raw, '/nope']), { code: 1, stdout: '', stderr: 'diskhub img ls: /nope: No such file or directory\n' });
  assert.equal((await diskhub(['img', 'ls', '--csv', raw, '/'])).stderr, 'diskhub img ls: used a flag which can only be combined with -lR mode\n');
  assert.equal((await diskhub(['img', 'ls', '-lR', '-h', '--csv', raw, '/'])).stderr, 'diskhub img ls: you cannot use -h and --csv options together.\n');
  assert.equal((await diskhub(['img', 'ls', join(dir, 'missing.img'), '/'])).code, 1);

  if (!loopDevicesUsable()) return;
  const mnt = join(dir, 'mnt');
  await withLoopMount(raw, mnt, async () => {
    assert.deepEqual(lr.stdout.trim().split('\n').sort(), await findLr(mnt));
    // virt-ls DIR: the names, sorted as strcmp (ls -A in the C locale).
    const names = await diskhub(['img', 'ls', qcow2, '/d']);
    assert.equal(names.stdout, await runOk('ls', ['-A', join(mnt, 'd')], { env: { ...process.env, LC_ALL: 'C' } }));
    // virt-ls -l: the appliance's ls -la (numeric owners here: ls -lan).
    const long = await diskhub(['img', 'ls', '-l', qcow2, '/d'], { env: { ...process.env, TZ: 'UTC' } });
    assert.equal(long.stdout, await runOk('ls', ['-lan', join(mnt, 'd')], { env: { ...process.env, LC_ALL: 'C', TZ: 'UTC' } }));
    // virt-ls -R: every path below, relative, sorted as whole strings.
    const rec = await diskhub(['img', 'ls', '-R', vmdk, '/']);
    const found = (await runOk('find', ['.', '-mindepth', '1'], { cwd: mnt })).split('\n').filter(Boolean).map((p) => p.slice(2));
    assert.equal(rec.stdout, found.sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b))).join('\n') + '\n');
  });
});

test('img copy-out: directories, files and symlinks with modes, times and hard links; never writes outside the target', needs('mkfs.ext4', 'qemu-img'), async (t) => {
  const dir = await tempDir(t);
  const src = await rootTree(dir);
  const raw = join(dir, 'fs.img');
  await mkfs(src, raw);
  const out = join(dir, 'out');
  await mkdir(out);
  // A symlink already in the target where the copy needs a directory: replaced, never followed.
  const outside = join(dir, 'outside');
  await mkdir(outside);
  await symlink(outside, join(out, 'd'));
  const r = await diskhub(['img', 'copy-out', raw, '/d', '/rand', '/escape', out]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stderr, 'warning: /d/fifo: a fifo is not copied\n');
  assert.deepEqual(await runOk('ls', ['-A', outside]), '');
  for (const p of ['d/a b,"c"', 'd/sub/x', 'd/exec', 'd/sparse', 'rand']) {
    const [a, b] = [await stat(join(out, p)), await stat(join(src, p))];
    assert.equal(sha(await readFile(join(out, p))), sha(await readFile(join(src, p))), p);
    assert.equal(a.mode, b.mode, `${p} mode`);
    assert.equal(Math.floor(a.mtimeMs / 1000), Math.floor(b.mtimeMs / 1000), `${p} mtime`);
  }
  assert.equal((await stat(join(out, 'd'))).mode & 0o7777, (await stat(join(src, 'd'))).mode & 0o7777);
  assert.equal(Math.floor((await stat(join(out, 'd', 'sub'))).mtimeMs / 1000), Math.floor((await stat(join(src, 'd', 'sub'))).mtimeMs / 1000));
  assert.equal(await readlink(join(out, 'd', 'link')), '../rand');
  // A sparse file stays sparse.
  const sparse = await stat(join(out, 'd', 'sparse'));
  assert.equal(sparse.size, 24 * MiB);
  assert.ok(sparse.blocks <= 256, `${sparse.blocks} blocks`); // 64 KiB written: the grain holes are kept at
  assert.equal(sha(await readFile(join(out, 'd', 'sparse'))), sha(await readFile(join(src, 'd', 'sparse'))));
  // The symlink pointing out of the tree is copied as a link, nothing is written through it.
  assert.ok((await lstat(join(out, 'escape'))).isSymbolicLink());
  assert.equal(await readlink(join(out, 'escape')), '/etc/../../../../outside');
  // Hard links stay hard links, within a tree and across the paths of one copy.
  assert.equal((await stat(join(out, 'd', 'hard'))).ino, (await stat(join(out, 'rand'))).ino);
  const again = join(dir, 'again');
  await mkdir(again);
  assert.equal((await diskhub(['img', 'copy-out', raw, '/', again])).code, 0);
  assert.equal((await stat(join(again, 'd', 'hard'))).ino, (await stat(join(again, 'rand'))).ino);
  assert.equal(await readFile(join(again, 'etc', 'hostname'), 'utf8'), 'guest\n');

  // Errors: a target that is not a directory, a missing path.
  assert.deepEqual(await diskhub(['img', 'copy-out', raw, '/rand', join(out, 'rand')]), { code: 1, stdout: '', stderr: `diskhub img copy-out: copy-out: target '${join(out, 'rand')}' is not a directory\n` });
  assert.equal((await diskhub(['img', 'copy-out', raw, '/nope', out])).stderr, 'diskhub img copy-out: /nope: No such file or directory\n');

  // A hostile name: a directory entry "a/b" (patched into the image) is a typed error, nothing lands outside.
  await writeFile(join(src, 'aXb'), 'x');
  const hostile = join(dir, 'hostile.img');
  await mkfs(src, hostile, ['-O', '^metadata_csum']);
  const bytes = await readFile(hostile);
  const at = bytes.indexOf('aXb');
  assert.ok(at > 0);
  bytes[at + 1] = 0x2f;
  await writeFile(hostile, bytes);
  const h = join(dir, 'h');
  await mkdir(h);
  const hr = await diskhub(['img', 'copy-out', hostile, '/', h]);
  assert.equal(hr.code, 1);
  assert.match(hr.stderr, /invalid name "a\/b"/);
  await assert.rejects(lstat(join(h, 'a')));
});

test('img ls / cat: --partition, --lv, and the root filesystem found by inspection in a GPT disk, LVM and a LUKS qcow2', { ...needs('mkfs.ext4', 'sgdisk', 'qemu-img', 'lvm', 'losetup'), ...needsLoopDevices() }, async (t) => {
  const dir = await tempDir(t);
  const src = await rootTree(dir);
  const data = join(dir, 'data');
  await mkdir(data);
  await writeFile(join(data, 'only-data'), 'data\n');
  // GPT: partition 1 a data filesystem, partition 2 the root (made in place with mkfs.ext4 -E offset).
  const disk = join(dir, 'gpt.img');
  await writeFile(disk, '');
  await truncate(disk, 80 * MiB);
  await runOk('sgdisk', ['-n1:2048:+16M', '-n2:0:+40M', disk]);
  const starts = (await runOk('sgdisk', ['-p', disk])).split('\n').filter((l) => /^\s+\d+\s/.test(l)).map((l) => Number(l.trim().split(/\s+/)[1]) * 512);
  await runOk('mkfs.ext4', ['-q', '-F', '-E', `offset=${starts[0]}`, '-d', data, disk, '16M']);
  await runOk('mkfs.ext4', ['-q', '-F', '-E', `offset=${starts[1]}`, '-d', src, disk, '40M']);
  const qcow2 = join(dir, 'gpt.qcow2');
  await qemuImg('convert', '-O', 'qcow2', disk, qcow2);
  assert.equal((await diskhub(['img', 'ls', qcow2, '/'])).stdout, 'd\nescape\netc\nlost+found\nrand\n');
  assert.equal((await diskhub(['img', 'ls', '--partition', '1', qcow2, '/'])).stdout, 'lost+found\nonly-data\n');
  assert.equal((await diskhub(['img', 'cat', '--partition', '2', qcow2, '/etc/hostname'])).stdout, 'guest\n');
  const bad = await diskhub(['img', 'ls', '--partition', '7', qcow2, '/']);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /^diskhub img ls: /);

  // LVM: a PV on the whole disk image, LVs "data" and "root" (inactive: their contents written at their offsets).
  const pv = join(dir, 'pv.img');
  await writeFile(pv, '');
  await truncate(pv, 96 * MiB);
  const offsets = await inactiveLogicalVolumes(pv, 'vg0', [{ name: 'data', size: '16M' }, { name: 'root', size: '40M' }]);
  await runOk('mkfs.ext4', ['-q', '-F', '-E', `offset=${offsets.get('data')}`, '-d', data, pv, '16M']);
  await runOk('mkfs.ext4', ['-q', '-F', '-E', `offset=${offsets.get('root')}`, '-d', src, pv, '40M']);
  assert.equal((await diskhub(['img', 'cat', pv, '/etc/hostname'])).stdout, 'guest\n');
  assert.equal((await diskhub(['img', 'ls', '--lv', 'vg0/data', pv, '/'])).stdout, 'lost+found\nonly-data\n');

  // Two root filesystems: inspection cannot choose, and says so.
  await runOk('mkfs.ext4', ['-q', '-F', '-E', `offset=${starts[0]}`, '-d', src, disk, '16M']);
  const two = await diskhub(['img', 'ls', disk, '/']);
  assert.equal(two.code, 1);
  assert.match(two.stderr, /several operating system root filesystems found \(partition 1, partition 2\): choose one with --partition or --lv/);

  // A LUKS-encrypted qcow2, opened with --object and --image-opts as qemu-img does.
  const luks = join(dir, 'luks.qcow2');
  await qemuImg('convert', '--object', 'secret,id=sec0,data=hunter2', '-O', 'qcow2', '-o', 'encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10', qcow2, luks);
  const enc = await diskhub(['img', 'cat', '--partition', '2', '--object', 'secret,id=sec0,data=hunter2', '--image-opts', `driver=qcow2,file.filename=${luks},encrypt.key-secret=sec0`, '/etc/hostname']);
  assert.equal(enc.stdout, 'guest\n', enc.stderr);
});

test('img ls: a journal that needs recovery is reported on stderr and the listing still printed; a directory loop is an error; -f is the declared format', needs('mkfs.ext4', 'debugfs'), async (t) => {
  const dir = await tempDir(t);
  const img = join(dir, 'fs.img');
  await runOk('mkfs.ext4', ['-q', '-F', img, '8M']);
  await runOk('debugfs', ['-w', '-R', 'feature needs_recovery', img]);
  const r = await diskhub(['img', 'ls', img, '/']);
  assert.equal(r.code, 0);
  assert.equal(r.stdout, 'lost+found\n');
  assert.match(r.stderr, /^warning: .*fs\.img: the journal needed recovery .*replayed in memory/);

  // A directory loop (a hard link to the root, made by debugfs): a clear error and exit 1, not a hang.
  await runOk('debugfs', ['-w', '-R', 'ln / /lost+found/loop', img]);
  const loop = await diskhub(['img', 'ls', '-lR', img, '/']);
  assert.equal(loop.code, 1);
  assert.match(loop.stderr, /diskhub img ls: \/lost\+found\/loop: directory inode 2 is reachable twice \(a directory loop\)\n$/);
  // -f names the format as with the other commands: a raw filesystem declared qcow2 is refused.
  const wrong = await diskhub(['img', 'ls', '-f', 'qcow2', img, '/']);
  assert.equal(wrong.code, 1);
  assert.match(wrong.stderr, /^diskhub img ls: Could not open/);
  assert.equal((await diskhub(['img', 'ls', '-f', 'raw', img, '/'])).stdout, 'lost+found\n');
});

test('img ls / cat / copy-out on XFS, vfat and iso9660 (registered readers): XFS equal to a read-only loop mount, vfat to mtools\'s extraction, iso9660 to the Rock Ridge source', { ...needs('mkfs.xfs', 'mkfs.vfat', 'mcopy', 'genisoimage', 'qemu-img', 'find'), ...needsLoopDevices() }, async (t) => {
  const dir = await tempDir(t);
  const src = join(dir, 'src');
  await mkdir(join(src, 'docs', 'deeper'), { recursive: true });
  await writeFile(join(src, 'docs', 'readme.txt'), 'read me\n');
  await writeFile(join(src, 'docs', 'deeper', 'data.bin'), randomBytes(300_000));
  await writeFile(join(src, 'Mixed Case Name.txt'), 'vfat long name\n');
  const images: { name: string; path: string }[] = [];
  // XFS: made empty, filled through a read-write loop mount (cp -a keeps modes and symlinks).
  const xfs = join(dir, 'fs.xfs');
  await writeFile(xfs, '');
  await truncate(xfs, 320 * MiB);
  await runOk('mkfs.xfs', ['-q', xfs]);
  const rw = join(dir, 'rw');
  await mkdir(rw);
  await runOk('mount', ['-o', 'loop', xfs, rw]);
  try {
    await runOk('cp', ['-a', `${src}/.`, rw]);
    await symlink('docs/readme.txt', join(rw, 'link'));
  } finally {
    await run('umount', [rw]);
  }
  images.push({ name: 'xfs', path: xfs });
  const vfat = join(dir, 'fs.vfat');
  await writeFile(vfat, '');
  await truncate(vfat, 64 * MiB);
  await runOk('mkfs.vfat', [vfat]);
  await runOk('mcopy', ['-s', '-m', '-i', vfat, join(src, 'docs'), join(src, 'Mixed Case Name.txt'), '::/']);
  images.push({ name: 'vfat', path: vfat });
  const iso = join(dir, 'fs.iso');
  await runOk('genisoimage', ['-quiet', '-R', '-J', '-o', iso, src]);
  images.push({ name: 'iso9660', path: iso });
  for (const { name, path } of images) {
    const qcow2 = `${path}.qcow2`;
    await qemuImg('convert', '-O', 'qcow2', path, qcow2);
    const lr = await diskhub(['img', 'ls', '-lR', qcow2, '/']);
    assert.equal(lr.code, 0, `${name}: ${lr.stderr}`);
    if (name === 'vfat') {
      // This kernel has no vfat module: mtools's own extraction is the peer for the names.
      const extracted = join(dir, 'mcopy-out');
      await mkdir(extracted);
      await runOk('mcopy', ['-s', '-n', '-i', path, '::/docs', '::/Mixed Case Name.txt', extracted]);
      const found = (await runOk('find', ['.', '-mindepth', '1'], { cwd: extracted })).split('\n').filter(Boolean).map((p) => p.slice(2)).sort();
      assert.deepEqual((await diskhub(['img', 'ls', '-R', qcow2, '/'])).stdout.trim().split('\n').sort(), found);
    } else if (name === 'iso9660') {
      // No isofs module here either: Rock Ridge keeps the source's modes, sizes and links (directory sizes are the image's own).
      const files = (lines: string[]) => lines.filter((l) => !l.startsWith('d ')).sort();
      assert.deepEqual(files(lr.stdout.trim().split('\n')), files(await findLr(src)));
      const dirs = (lines: string[]) => lines.filter((l) => l.startsWith('d ')).map((l) => l.slice(18)).sort();
      assert.deepEqual(dirs(lr.stdout.trim().split('\n')), dirs(await findLr(src)));
    } else {
      const mnt = join(dir, `mnt-${name}`);
      await withLoopMount(path, mnt, async () => {
        assert.deepEqual(lr.stdout.trim().split('\n').sort(), await findLr(mnt), name);
      });
    }
    const cat = await diskhub(['img', 'cat', qcow2, '/docs/readme.txt']);
    assert.equal(cat.stdout, 'read me\n', name);
    const out = join(dir, `out-${name}`);
    await mkdir(out);
    assert.equal((await diskhub(['img', 'copy-out', qcow2, '/docs', out])).code, 0, name);
    assert.equal(sha(await readFile(join(out, 'docs', 'deeper', 'data.bin'))), sha(await readFile(join(src, 'docs', 'deeper', 'data.bin'))), name);
  }
});
