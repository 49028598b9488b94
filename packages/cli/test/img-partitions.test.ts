/** `img partitions`, and `--partition` / `--lv` on info, map and convert, against sfdisk, blkid, qemu-img and dd. */
import test from 'node:test';
import assert from 'node:assert/strict';
import { readFile, truncate, writeFile, open } from 'node:fs/promises';
import { join } from 'node:path';
import { needs, tempDir, run, runOk, diskhub, qemuImg, lvm, withLoopDevices, needsLoopDevices } from '@diskhub/testkit';

const MiB = 1 << 20;

async function sparseFile(path: string, size: number): Promise<string> {
  await writeFile(path, '');
  await truncate(path, size);
  return path;
}

async function blkidAt(path: string, offset: number, size: number): Promise<Record<string, string>> {
  const r = await run('blkid', ['-p', '-o', 'export', '-O', String(offset), '-S', String(size), path]);
  if (r.code === 2) return {}; // blkid: nothing recognised
  assert.equal(r.code, 0, r.stderr);
  const out = r.stdout;
  return Object.fromEntries(out.trim().split('\n').map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1).replace(/\\(.)/g, '$1')]));
}

/**
 * A dos disk made by sfdisk: ext4 made in place (mkfs.ext4 -E offset), FAT32 in place
 * (mkfs.fat --offset), swap made alone and spliced in with dd, one logical partition empty.
 */
async function dosDisk(dir: string): Promise<string> {
  const disk = await sparseFile(join(dir, 'dos.img'), 96 * MiB);
  await runOk('sfdisk', ['-q', disk], { input: 'label: dos\nlabel-id: 0x1badd00d\nstart=2048,size=32768,type=83,bootable\nsize=16384,type=82\ntype=5\nsize=8192,type=83\nsize=69632,type=c\n' });
  const parts = JSON.parse(await runOk('sfdisk', ['--json', disk])).partitiontable.partitions as { node: string; start: number; size: number }[];
  const at = (n: number) => parts.find((p) => p.node.endsWith(String(n)))!;
  await runOk('mkfs.ext4', ['-q', '-F', '-L', 'root', '-U', '9e2a4bde-32d5-4a3c-8e2e-4f1b6d7a8c90', '-E', `offset=${at(1).start * 512}`, disk, `${at(1).size / 2}k`]);
  await runOk('mkfs.fat', ['-F', '32', '-n', 'DATA', '-i', 'c0ffee42', `--offset=${at(6).start}`, disk, String(at(6).size / 2)]);
  const swap = await sparseFile(join(dir, 'swap.img'), at(2).size * 512);
  await runOk('mkswap', ['-L', 'swappy', '-U', '6f1c2d3e-4a5b-4c6d-8e7f-901a2b3c4d5e', swap]);
  await runOk('dd', [`if=${swap}`, `of=${disk}`, 'bs=512', `seek=${at(2).start}`, 'conv=notrunc', 'status=none']);
  return disk;
}

test('img partitions: the dos table as sfdisk --json lists it, with the filesystem blkid finds on each partition', needs('sfdisk', 'mkfs.ext4', 'mkfs.fat', 'mkswap', 'blkid'), async (t) => {
  const dir = await tempDir(t);
  const disk = await dosDisk(dir);
  const r = await diskhub(['img', 'partitions', '--output=json', disk]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stderr, '');
  const ours = JSON.parse(r.stdout);
  const peer = JSON.parse(await runOk('sfdisk', ['--json', disk])).partitiontable;
  assert.equal(ours.partitiontable.label, peer.label);
  assert.equal(ours.partitiontable.id, peer.id);
  assert.deepEqual(
    ours.partitiontable.partitions.map((p: Record<string, unknown>) => ({ node: `${disk}${p.number}`, start: p.start, size: p.sectors, type: p.type, ...(p.bootable ? { bootable: true } : {}) })),
    peer.partitions,
  );
  // blkid on the whole disk: the table type and the id PARTUUIDs are made of (<PTUUID>-<nn>).
  const whole = await runOk('blkid', ['-p', '-o', 'export', disk]);
  assert.match(whole, /PTTYPE=dos/);
  const ptuuid = /PTUUID=(\w+)/.exec(whole)![1];
  for (const p of ours.partitiontable.partitions) {
    assert.equal(p.uuid, `${ptuuid}-${String(p.number).padStart(2, '0')}`);
    if (p.kind === 'extended') continue;
    const b = await blkidAt(disk, p.offset, p.size);
    const fs = p.filesystem;
    if (!b.TYPE) { assert.equal(fs, null, `partition ${p.number}: nothing there`); continue; }
    assert.deepEqual({ TYPE: fs.type, LABEL: fs.label, UUID: fs.uuid }, { TYPE: b.TYPE, LABEL: b.LABEL, UUID: b.UUID }, `partition ${p.number}`);
  }
  assert.deepEqual(ours.partitiontable.partitions.map((p: { filesystem: { type: string } | null }) => p.filesystem?.type ?? null), ['ext4', 'swap', null, null, 'vfat']);

  // The human listing: one row per partition with start, end, sectors, size, type and filesystem.
  const human = await diskhub(['img', 'partitions', disk]);
  assert.equal(human.code, 0);
  assert.match(human.stdout, /Disklabel type: dos\nDisk identifier: 0x1badd00d/);
  assert.match(human.stdout, /\n +1 \* +2048 +34815 +32768 +16M Linux +1badd00d-01 +ext4 +root +9e2a4bde-32d5-4a3c-8e2e-4f1b6d7a8c90\n/);
  assert.match(human.stdout, /\n +6 +\d+ +\d+ +69632 +34M W95 FAT32 \(LBA\) +1badd00d-06 +vfat \(FAT32\) DATA +C0FF-EE42\n/);
});

test('info, map and convert with --partition agree with qemu-img on the same byte range (raw driver offset/size) and with dd', needs('sgdisk', 'qemu-img', 'dd'), async (t) => {
  const dir = await tempDir(t);
  // A GPT disk whose every byte is written (so allocation maps are the same whatever the host's holes).
  const disk = join(dir, 'gpt.img');
  const bytes = Buffer.alloc(24 * MiB);
  for (let i = 0; i < bytes.length; i += 4) bytes.writeUInt32LE((i * 2654435761) >>> 0, i);
  await writeFile(disk, bytes);
  await runOk('sgdisk', ['-Z', disk]).catch(() => undefined);
  await runOk('sgdisk', ['-n1:2048:+3M', '-c1:boot', '-n2:0:+9M', '-c2:data', '-t2:8300', disk]);
  const table = JSON.parse((await diskhub(['img', 'partitions', '--output=json', disk])).stdout).partitiontable;
  const p2 = table.partitions[1];
  const opts = `driver=raw,offset=${p2.offset},size=${p2.size},file.filename=${disk}`;

  const map = await diskhub(['img', 'map', '--output=json', '--partition', '2', disk]);
  assert.equal(map.code, 0, map.stderr);
  assert.equal(map.stdout, await qemuImg('map', '--output=json', '--image-opts', opts));
  const info = JSON.parse((await diskhub(['img', 'info', '--output=json', '--partition', '2', disk])).stdout);
  const peerInfo = JSON.parse(await qemuImg('info', '--output=json', '--image-opts', opts));
  assert.equal(info['virtual-size'], peerInfo['virtual-size']);
  assert.deepEqual([info.partition.number, info.partition.offset, info.partition.uuid, info.partition.name], [2, p2.offset, p2.uuid, 'data']);

  // convert: the extracted partition is byte-equal to dd of its range and to qemu-img's extraction; qcow2 output compares equal too.
  const ours = join(dir, 'p2.raw');
  const r = await diskhub(['img', 'convert', '-O', 'raw', '--partition', '2', disk, ours]);
  assert.equal(r.code, 0, r.stderr);
  const dd = join(dir, 'p2.dd');
  await runOk('dd', [`if=${disk}`, `of=${dd}`, 'bs=512', `skip=${p2.start}`, `count=${p2.sectors}`, 'status=none']);
  assert.ok((await readFile(ours)).equals(await readFile(dd)), 'convert --partition 2 equals dd of the range');
  const peerOut = join(dir, 'p2.peer');
  await qemuImg('convert', '--image-opts', opts, '-O', 'raw', peerOut);
  assert.ok((await readFile(ours)).equals(await readFile(peerOut)));

  // Bad selections: clear messages, exit 1, nothing written.
  for (const [args, message] of [
    [['info', '--partition', '7', disk], /partition 7 does not exist \(gpt table; partitions: 1, 2\)/],
    [['map', '--partition', '0', disk], /Invalid partition number '0'/],
    [['info', '--partition', '1', '--lv', 'a/b', disk], /cannot be used together/],
    [['convert', '-O', 'raw', '--lv', 'vg/lv', disk, join(dir, 'none.raw')], /volume group vg not found/],
  ] as const) {
    const bad = await diskhub(['img', ...args]);
    assert.equal(bad.code, 1, args.join(' '));
    assert.match(bad.stderr, message);
  }
  await assert.rejects(readFile(join(dir, 'none.raw')));
});

test('GPT with a corrupted primary header: partitions listed from the backup, with a warning', needs('sgdisk'), async (t) => {
  const dir = await tempDir(t);
  const disk = await sparseFile(join(dir, 'd.img'), 16 * MiB);
  await runOk('sgdisk', ['-n1:0:+4M', '-c1:only', disk]);
  const fh = await open(disk, 'r+');
  await fh.write(Buffer.from('XXXX'), 0, 4, 512 + 40);
  await fh.close();
  const r = await diskhub(['img', 'partitions', '--output=json', disk]);
  assert.equal(r.code, 0);
  const j = JSON.parse(r.stdout);
  assert.equal(j.partitiontable.header, 'backup');
  assert.equal(j.partitiontable.partitions[0].name, 'only');
  assert.match(r.stderr, /warning: primary GPT header is not usable/);
});

test('img partitions finds LVM inside a partition; --lv reads a logical volume for info and convert', { ...needs('lvm', 'losetup', 'sgdisk', 'mkfs.ext4', 'dd'), ...needsLoopDevices() }, async (t) => {
  const dir = await tempDir(t);
  const pvFile = await sparseFile(join(dir, 'pv.img'), 40 * MiB);
  const layout = await withLoopDevices([pvFile], async (loops) => {
    await lvm('pvcreate', loops, loops);
    await lvm('vgcreate', ['-s', '1M', 'guestvg', ...loops], loops);
    await lvm('lvcreate', ['-an', '-Zn', '-L', '8M', '-n', 'swap', 'guestvg'], loops);
    await lvm('lvcreate', ['-an', '-Zn', '-L', '20M', '-n', 'root', 'guestvg'], loops);
    const seg = JSON.parse(await lvm('lvs', ['--reportformat', 'json', '--units', 'b', '--nosuffix', '-o', 'lv_name,lv_uuid,seg_pe_ranges', '--segments'], loops)).report[0].seg;
    const pv = JSON.parse(await lvm('pvs', ['--reportformat', 'json', '--units', 'b', '--nosuffix', '-o', 'pe_start'], loops)).report[0].pv[0];
    return { seg, peStart: Number(pv.pe_start) };
  });
  const root = layout.seg.find((s: { lv_name: string }) => s.lv_name === 'root');
  const firstPe = Number(/:(\d+)-/.exec(root.seg_pe_ranges)![1]);
  // An ext4 filesystem where lvs says guestvg/root lives.
  const fsFile = await sparseFile(join(dir, 'root.ext4'), 20 * MiB);
  await runOk('mkfs.ext4', ['-q', '-F', '-L', 'guestroot', fsFile]);
  await runOk('dd', [`if=${fsFile}`, `of=${pvFile}`, 'bs=1M', `seek=${(layout.peStart + firstPe * MiB) / MiB}`, 'conv=notrunc', 'status=none']);
  // The PV in partition 2 of a GPT disk.
  const disk = await sparseFile(join(dir, 'guest.img'), 48 * MiB);
  await runOk('sgdisk', ['-n1:0:+2M', '-t1:ef02', '-n2:0:+40M', '-t2:8e00', disk]);
  const p2Start = JSON.parse((await diskhub(['img', 'partitions', '--output=json', disk])).stdout).partitiontable.partitions[1].offset;
  await runOk('dd', [`if=${pvFile}`, `of=${disk}`, 'bs=1M', `seek=${p2Start / MiB}`, 'conv=notrunc', 'status=none']);

  const r = await diskhub(['img', 'partitions', '--output=json', disk]);
  assert.equal(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  assert.equal(j.partitiontable.partitions[1].filesystem.type, 'LVM2_member');
  assert.equal(j.lvm.length, 1);
  assert.equal(j.lvm[0].name, 'guestvg');
  assert.deepEqual(j.lvm[0].pvs.map((p: { device: string }) => p.device), ['partition 2']);
  const lvs = Object.fromEntries(j.lvm[0].lvs.map((l: { name: string }) => [l.name, l]));
  assert.deepEqual([lvs.root.uuid, lvs.root.size, lvs.root.segtype], [root.lv_uuid, 20 * MiB, 'linear']);
  assert.deepEqual([lvs.root.filesystem.type, lvs.root.filesystem.label], ['ext4', 'guestroot']);
  const human = (await diskhub(['img', 'partitions', disk])).stdout;
  assert.match(human, /LVM volume group guestvg .* on partition 2\n/);
  assert.match(human, /guestvg\/root +20M linear +ext4 +guestroot/);

  const info = JSON.parse((await diskhub(['img', 'info', '--output=json', '--lv', 'guestvg/root', disk])).stdout);
  assert.equal(info['virtual-size'], 20 * MiB);
  assert.equal(info.filesystem.label, 'guestroot');
  const out = join(dir, 'root.raw');
  const c = await diskhub(['img', 'convert', '-O', 'raw', '--lv', 'guestvg/root', disk, out]);
  assert.equal(c.code, 0, c.stderr);
  assert.ok((await readFile(out)).equals(await readFile(fsFile)), 'convert --lv extracts the filesystem byte for byte');
});

test('a partition extracted with convert is a filesystem the ext4 tools and the kernel accept (e2fsck, debugfs, mount)', needs('sfdisk', 'mkfs.ext4', 'e2fsck', 'debugfs'), async (t) => {
  const dir = await tempDir(t);
  const content = join(dir, 'content');
  await runOk('mkdir', ['-p', join(content, 'etc')]);
  const hello = 'hello from inside partition 2\n'.repeat(1000);
  await writeFile(join(content, 'etc', 'hello.txt'), hello);
  const disk = await sparseFile(join(dir, 'vm.img'), 40 * MiB);
  await runOk('sfdisk', ['-q', disk], { input: 'label: gpt\nstart=2048,size=8192,type=U\nsize=61440,type=L,name=root\n' });
  const p2 = JSON.parse((await diskhub(['img', 'partitions', '--output=json', disk])).stdout).partitiontable.partitions[1];
  await runOk('mkfs.ext4', ['-q', '-F', '-L', 'vmroot', '-d', content, '-E', `offset=${p2.offset}`, disk, `${p2.size / 1024}k`]);

  const out = join(dir, 'root.raw');
  const r = await diskhub(['img', 'convert', '-O', 'raw', '--partition', '2', disk, out]);
  assert.equal(r.code, 0, r.stderr);
  await runOk('e2fsck', ['-fn', out]);
  assert.equal(await runOk('debugfs', ['-R', 'cat /etc/hello.txt', out]), hello);
  if (needsLoopDevices().skip) return;
  // The kernel's own ext4 driver reads it too.
  const mnt = join(dir, 'mnt');
  await runOk('mkdir', [mnt]);
  await withLoopDevices([out], async ([loop]) => {
    await runOk('mount', ['-o', 'ro', loop!, mnt]);
    try {
      assert.equal(await readFile(join(mnt, 'etc', 'hello.txt'), 'utf8'), hello);
    } finally {
      await runOk('umount', [mnt]);
    }
  });
});

test('img partitions on a 600-partition GPT lists all of them (as sfdisk does) and probes only the first 256; a GPT with no usable header fails cleanly', needs('sfdisk'), async (t) => {
  const dir = await tempDir(t);
  const disk = await sparseFile(join(dir, 'many.img'), 8 * MiB);
  const lines = ['label: gpt', 'table-length: 1024', ...Array.from({ length: 600 }, (_, i) => `start=${2048 + i * 16},size=16`)];
  await runOk('sfdisk', ['-q', disk], { input: lines.join('\n') + '\n' });
  const peer = JSON.parse(await runOk('sfdisk', ['--json', disk])).partitiontable.partitions;
  const r = await diskhub(['img', 'partitions', '--output=json', disk]);
  assert.equal(r.code, 0, r.stderr);
  const ours = JSON.parse(r.stdout).partitiontable.partitions;
  assert.equal(ours.length, peer.length);
  assert.deepEqual(ours.map((p: { start: number; uuid: string }) => [p.start, p.uuid]), peer.map((p: { start: number; uuid: string }) => [p.start, p.uuid]));
  assert.match(r.stderr, /344 partitions past the first 256 were not looked into/);

  // Both GPT headers destroyed behind a protective MBR: an error naming both, exit 1.
  const fh = await open(disk, 'r+');
  const size = (await fh.stat()).size;
  await fh.write(Buffer.alloc(8), 0, 8, 512);
  await fh.write(Buffer.alloc(8), 0, 8, size - 512);
  await fh.close();
  const bad = await diskhub(['img', 'partitions', disk]);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /protective MBR found, but no GPT header/);
});

test('img partitions on whole-disk filesystems (no table): FAT and NTFS boot sectors are not taken for an MBR', needs('mkfs.vfat', 'mkntfs', 'mkfs.ext4', 'blkid'), async (t) => {
  const dir = await tempDir(t);
  for (const [name, cmd, args] of [
    ['fat16', 'mkfs.vfat', ['-F', '16', '-n', 'WHOLE16']],
    ['fat32', 'mkfs.vfat', ['-F', '32', '-n', 'WHOLE32']],
    ['ntfs', 'mkntfs', ['-q', '-F', '-f', '-L', 'whole']],
    ['ext4', 'mkfs.ext4', ['-q', '-F', '-L', 'whole']],
  ] as const) {
    const file = await sparseFile(join(dir, `${name}.img`), 40 * MiB);
    await runOk(cmd, [...args, file]);
    const r = await diskhub(['img', 'partitions', '--output=json', file]);
    assert.equal(r.code, 0, r.stderr);
    const j = JSON.parse(r.stdout);
    assert.equal(j.partitiontable, null, name);
    const b = await blkidAt(file, 0, 40 * MiB);
    assert.equal(b.PTTYPE, undefined, `${name}: blkid sees no table either`);
    assert.deepEqual([j.filesystem.type, j.filesystem.label, j.filesystem.uuid], [b.TYPE, b.LABEL, b.UUID], name);
  }
});

test('img partitions with several images: a volume group spanning two disks is assembled; with one disk its missing PV is named', { ...needs('lvm', 'losetup', 'mkfs.ext4'), ...needsLoopDevices() }, async (t) => {
  const dir = await tempDir(t);
  const disks = [await sparseFile(join(dir, 'vda.img'), 24 * MiB), await sparseFile(join(dir, 'vdb.img'), 24 * MiB)];
  const peer = await withLoopDevices(disks, async (loops) => {
    await lvm('pvcreate', loops, loops);
    await lvm('vgcreate', ['-s', '1M', 'spanvg', ...loops], loops);
    await lvm('lvcreate', ['-an', '-Zn', '-l', '100%FREE', '-n', 'data', 'spanvg'], loops);
    return JSON.parse(await lvm('lvs', ['--reportformat', 'json', '--units', 'b', '--nosuffix', '-o', 'lv_name,lv_size,seg_pe_ranges', '--segments'], loops)).report[0].seg as { lv_size: string; seg_pe_ranges: string }[];
  });
  assert.equal(peer.length, 2, 'the LV has a segment on each PV');
  const both = await diskhub(['img', 'partitions', '--output=json', ...disks]);
  assert.equal(both.code, 0, both.stderr);
  const j = JSON.parse(both.stdout);
  assert.deepEqual(j.disks.map((d: { filename: string; filesystem: { type: string } }) => [d.filename, d.filesystem.type]), disks.map((d) => [d, 'LVM2_member']));
  assert.deepEqual(j.lvm[0].missing, []);
  assert.deepEqual(j.lvm[0].pvs.map((p: { device: string }) => p.device), disks.map((d) => `${d} whole disk`));
  assert.equal(j.lvm[0].lvs[0].size, Number(peer[0]!.lv_size));
  assert.equal(j.lvm[0].lvs[0].unsupported, undefined);

  const one = await diskhub(['img', 'partitions', '--output=json', disks[0]!]);
  const k = JSON.parse(one.stdout);
  assert.equal(k.lvm[0].missing.length, 1);
  assert.match(k.lvm[0].lvs[0].unsupported, /needs physical volume .* which was not given/);
  assert.match((await diskhub(['img', 'partitions', disks[0]!])).stdout, /spanvg\/data .* linear \(cannot open\)/);
});

test('--partition N selects the same bytes as nbdkit\'s partition filter, for MBR primaries and logicals and for GPT', needs('nbdkit', 'nbdcopy', 'sfdisk'), async (t) => {
  const dir = await tempDir(t);
  // Every byte different enough that a wrong offset cannot match.
  const pattern = Buffer.alloc(48 * MiB);
  for (let i = 0; i < pattern.length; i += 4) pattern.writeUInt32LE((i * 2654435761) >>> 0, i);
  for (const [label, script] of [
    ['dos', 'label: dos\nstart=2048,size=8192,type=83\ntype=5\nsize=4096,type=83\nsize=6144,type=82\nsize=2048,type=8e\n'],
    ['gpt', 'label: gpt\nstart=2048,size=8192\nsize=4096,name=b\nstart=30000,size=2048,name=c\n'],
  ] as const) {
    const disk = join(dir, `${label}.img`);
    await writeFile(disk, pattern);
    await runOk('sfdisk', ['-q', '--wipe', 'never', disk], { input: script });
    const parts = JSON.parse((await diskhub(['img', 'partitions', '--output=json', disk])).stdout).partitiontable.partitions as { number: number; kind: string }[];
    for (const p of parts.filter((x) => x.kind !== 'extended')) {
      const ours = join(dir, `${label}-${p.number}.ours`);
      const theirs = join(dir, `${label}-${p.number}.nbdkit`);
      const r = await diskhub(['img', 'convert', '-O', 'raw', '--partition', String(p.number), disk, ours]);
      assert.equal(r.code, 0, r.stderr);
      await runOk('nbdkit', ['-U', '-', '--filter=partition', 'file', disk, `partition=${p.number}`, '--run', `nbdcopy "$uri" '${theirs}'`]);
      assert.ok((await readFile(ours)).equals(await readFile(theirs)), `${label} partition ${p.number}`);
    }
    assert.deepEqual(parts.map((p) => p.number), label === 'dos' ? [1, 2, 5, 6, 7] : [1, 2, 3]);
  }
});
