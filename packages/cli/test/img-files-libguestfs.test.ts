/**
 * `img ls -lR` and `img cat` side by side with libguestfs's virt-ls -lR and virt-cat on the
 * same small image (a GPT qcow2 whose root is mkfs.ext4 -d of a small OS tree): the same
 * lines, the same bytes. libguestfs boots its appliance for each call; on this machine only
 * with LIBGUESTFS_BACKEND=direct and TCG (its KVM start aborts), about 20-30 s a call.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, symlink, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { diskhub, gptExt4Disk, makeSmallOsTree, needs, run, tempDir } from '@diskhub/testkit';

const GUESTFS_ENV = { ...process.env, LIBGUESTFS_BACKEND: 'direct', LIBGUESTFS_BACKEND_SETTINGS: 'force_tcg' };

test('img ls -lR and img cat print what virt-ls -lR and virt-cat print', { ...needs('virt-ls', 'virt-cat', 'mkfs.ext4', 'sgdisk', 'qemu-img'), timeout: 15 * 60_000 }, async (t) => {
  const dir = await tempDir(t);
  const root = join(dir, 'root');
  await makeSmallOsTree(root, 'guestfs-host');
  await mkdir(join(root, 'srv/data/deeper'), { recursive: true });
  await writeFile(join(root, 'srv/data/random.bin'), randomBytes(300_000));
  await writeFile(join(root, 'srv/data/deeper/note.txt'), 'a note\n');
  await symlink('../data/deeper/note.txt', join(root, 'srv/link'));
  const { qcow2 } = await gptExt4Disk(dir, root, 'guestfs');

  // --uids, --time-t and --checksum: owners, the three times and each file's md5 on every line.
  const args = ['-lR', '--uids', '--time-t', '--checksum'];
  const peer = await run('virt-ls', ['--format=qcow2', '-a', qcow2, ...args, '/'], { env: GUESTFS_ENV, timeoutMs: 10 * 60_000 });
  assert.equal(peer.code, 0, peer.stderr);
  const ours = await diskhub(['img', 'ls', ...args, qcow2, '/']);
  assert.equal(ours.code, 0, ours.stderr);
  assert.ok(peer.stdout.split('\n').length > 20, 'virt-ls listed the tree');
  assert.equal(ours.stdout, peer.stdout);

  const cat = await run('virt-cat', ['--format=qcow2', '-a', qcow2, '/etc/hostname'], { env: GUESTFS_ENV, timeoutMs: 10 * 60_000 });
  assert.equal(cat.code, 0, cat.stderr);
  const oursCat = await diskhub(['img', 'cat', qcow2, '/etc/hostname']);
  assert.equal(oursCat.stdout, cat.stdout);
  assert.equal(oursCat.stdout, 'guestfs-host\n');
});
