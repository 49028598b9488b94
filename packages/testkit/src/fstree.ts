/**
 * A source tree with every kind of file a filesystem reader must get right (for mkfs.ext4 -d
 * and the other mkfs tools' directory inputs), and the peer listings the readers are compared
 * with: `find -printf` over a read-only loop mount.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, writeFile, symlink, link, chmod, chown, open, utimes } from 'node:fs/promises';
import { join } from 'node:path';
import { runOk, run } from './run.js';

export const MiB = 1 << 20;

/**
 * Files of many sizes (0, 1, block-sized, 6 MiB reaching double indirect blocks), a sparse
 * file of 100 MiB with data at 50 MiB, 90 MiB and its end (mke2fs -O inline_data loses a trailing hole's size), a fragmented file of 24 separate pieces
 * (an extent tree deeper than the inode), a directory of 5000 entries, one 40 levels deep,
 * fast and slow symlinks, hard links, every permission bit, owners with 32-bit ids, names
 * with spaces and UTF-8, and (as root) a fifo, devices and a socket.
 */
export async function makeSourceTree(root: string): Promise<void> {
  await mkdir(root, { recursive: true });
  const file = (name: string, data: Uint8Array | string) => writeFile(join(root, name), data);
  await file('empty', '');
  await file('one', 'x');
  await file('hello.txt', 'hello, world\n');
  await file('block', randomBytes(4096));
  await file('block+1', randomBytes(4097));
  await file('rand-6M', randomBytes(6 * MiB + 123));
  await file('with space', 'spaced\n');
  await file('ünïcödé', 'utf-8 name\n');
  // Sparse: holes around two pieces of data.
  const sparse = await open(join(root, 'sparse'), 'w');
  await sparse.truncate(100 * MiB);
  await sparse.write(Buffer.from('fifty'), 0, 5, 50 * MiB);
  await sparse.write(randomBytes(5000), 0, 5000, 90 * MiB + 100);
  await sparse.write(Buffer.from('end\n'), 0, 4, 100 * MiB - 4);
  await sparse.close();
  const frag = await open(join(root, 'fragmented'), 'w');
  for (let i = 0; i < 24; i++) await frag.write(randomBytes(100), 0, 100, i * 256 * 1024);
  await frag.close();
  await mkdir(join(root, 'big'));
  for (let i = 0; i < 5000; i++) await writeFile(join(root, 'big', `entry-${i}`), i % 100 === 0 ? `${i}\n` : '');
  let deep = join(root, 'deep');
  for (let i = 0; i < 40; i++) deep = join(deep, `level${i}`);
  await mkdir(deep, { recursive: true });
  await writeFile(join(deep, 'bottom.txt'), 'at the bottom\n');
  await symlink('hello.txt', join(root, 'fast-link'));
  await symlink('t/'.repeat(100) + 'target', join(root, 'slow-link'));
  await symlink('/deep/level0', join(root, 'abs-dir-link'));
  await symlink('nowhere', join(root, 'dangling'));
  await link(join(root, 'hello.txt'), join(root, 'hard-link'));
  await mkdir(join(root, 'modes'));
  for (const mode of [0o7777, 0o4755, 0o2711, 0o1777, 0o0000, 0o0640, 0o0777]) {
    const p = join(root, 'modes', `m${mode.toString(8).padStart(4, '0')}`);
    await writeFile(p, mode.toString(8));
    await chmod(p, mode);
  }
  await mkdir(join(root, 'modes', 'sticky-dir'));
  await chmod(join(root, 'modes', 'sticky-dir'), 0o1770);
  await utimes(join(root, 'hello.txt'), 1_000_000_000, 1_234_567_890);
  if (process.getuid?.() === 0) {
    await chown(join(root, 'hello.txt'), 100_000, 70_000);
    await chown(join(root, 'with space'), 1234, 5678);
    execFileSync('mkfifo', [join(root, 'fifo')]);
    execFileSync('mknod', [join(root, 'null'), 'c', '1', '3']);
    execFileSync('mknod', [join(root, 'bigdev'), 'c', '300', '70000']);
    execFileSync('mknod', [join(root, 'disk'), 'b', '8', '1']);
    execFileSync('python3', ['-c', `import socket; socket.socket(socket.AF_UNIX).bind(${JSON.stringify(join(root, 'sock'))})`]);
  }
}

/** One line per path below `dir` as find prints it: path|type|mode|size|uid|gid|links|mtime@|atime@|512-blocks|target, sorted. */
export async function findListing(dir: string): Promise<string[]> {
  const out = await runOk('find', [dir, '-mindepth', '1', '-printf', '%P|%y|%m|%s|%U|%G|%n|%T@|%A@|%b|%l\\n']);
  return out.split('\n').filter((l) => l !== '').sort();
}

/** Run `fn` with `image` mounted read-only through a loop device at `mnt` (offset in bytes), always unmounted afterwards. */
export async function withLoopMount<T>(image: string, mnt: string, fn: () => Promise<T>, offset = 0): Promise<T> {
  await mkdir(mnt, { recursive: true });
  await runOk('mount', ['-o', `loop,ro${offset ? `,offset=${offset}` : ''}`, image, mnt]);
  try {
    return await fn();
  } finally {
    await run('umount', [mnt]);
  }
}
