/**
 * OVA appliances: a tar (built with tar(1)) of a hand-written OVF and streamOptimized vmdk
 * disks made by qemu-img. `info` lists the disks the OVF declares; `convert` reads a disk
 * straight out of the archive (the first, or `appliance.ova:N`) and qemu-img compare finds
 * the result identical to the disk; damaged archives give clear errors.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { needs, tempDir, qemuImg, qemuIo, run, runOk, diskhub } from '@diskhub/testkit';

const ovf = (disks: { file: string; bytes: number; capacityGiB?: number }[]) => `<?xml version="1.0" encoding="UTF-8"?>
<Envelope vmw:buildId="build-1" xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:vmw="http://www.vmware.com/schema/ovf">
  <References>
${disks.map((d, i) => `    <File ovf:href="${d.file}" ovf:id="file${i + 1}" ovf:size="${d.bytes}"/>`).join('\n')}
  </References>
  <DiskSection>
    <Info>Virtual disk information</Info>
${disks.map((d, i) => `    <Disk ovf:capacity="${d.capacityGiB ?? 0}" ovf:capacityAllocationUnits="byte * 2^30" ovf:diskId="vmdisk${i + 1}" ovf:fileRef="file${i + 1}" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>`).join('\n')}
  </DiskSection>
  <VirtualSystem ovf:id="appliance"><Info>A test appliance</Info></VirtualSystem>
</Envelope>
`;

test('ova: info lists the disks; convert reads the first or the chosen disk out of the tar', needs('qemu-img', 'qemu-io', 'tar'), async (t) => {
  const dir = await tempDir(t);
  const disks: { file: string; bytes: number; capacityGiB: number }[] = [];
  for (const [i, pattern] of [[1, 0x41], [2, 0x42]] as const) {
    const src = join(dir, `d${i}.qcow2`);
    await qemuImg('create', '-q', '-f', 'qcow2', src, `${i}G`);
    await qemuIo('-f', 'qcow2', '-c', `write -P ${pattern} 1000 300000`, '-c', `write -P ${pattern + 8} ${i * 1048576 * 700 + 7} 70000`, src);
    await qemuImg('convert', '-O', 'vmdk', '-o', 'subformat=streamOptimized', src, join(dir, `disk${i}.vmdk`));
    disks.push({ file: `disk${i}.vmdk`, bytes: (await readFile(join(dir, `disk${i}.vmdk`))).length, capacityGiB: i });
  }
  await writeFile(join(dir, 'appliance.ovf'), ovf(disks));
  await runOk('tar', ['-C', dir, '-cf', join(dir, 'appliance.ova'), 'appliance.ovf', 'disk1.vmdk', 'disk2.vmdk']);

  const info = await diskhub(['img', 'info', '--output=json', 'appliance.ova'], { cwd: dir });
  assert.equal(info.code, 0, info.stderr);
  const j = JSON.parse(info.stdout);
  assert.equal(j.format, 'ova');
  assert.equal(j['virtual-size'], 1 << 30);
  assert.equal(j['format-specific'].data['disk-format'], 'vmdk');
  assert.deepEqual(j['format-specific'].data.disks.map((d: Record<string, unknown>) => [d.index, d.file, d.capacity, d['file-size']]),
    [[0, 'disk1.vmdk', 1 << 30, disks[0]!.bytes], [1, 'disk2.vmdk', 2 * 2 ** 30, disks[1]!.bytes]]);
  const human = await diskhub(['img', 'info', 'appliance.ova'], { cwd: dir });
  assert.equal(human.code, 0, human.stderr);
  assert.match(human.stdout, /file format: ova/);

  for (const [arg, disk] of [['appliance.ova', 'disk1.vmdk'], ['appliance.ova:1', 'disk2.vmdk']] as const) {
    const out = `${disk}.qcow2`;
    const r = await diskhub(['img', 'convert', '-O', 'qcow2', arg, out], { cwd: dir });
    assert.equal(r.code, 0, r.stderr);
    const cmp = await run('qemu-img', ['compare', join(dir, disk), join(dir, out)]);
    assert.equal(cmp.code, 0, `${arg}: ${cmp.stdout}${cmp.stderr}`);
  }
  const none = await diskhub(['img', 'info', 'appliance.ova:7'], { cwd: dir });
  assert.notEqual(none.code, 0);
  assert.match(none.stderr, /has 2 disk\(s\); there is no disk 7/);

  // Damage: a truncated archive and a disk the OVF names but the tar lacks.
  const bytes = await readFile(join(dir, 'appliance.ova'));
  await writeFile(join(dir, 'cut.ova'), bytes.subarray(0, 4096));
  const cut = await diskhub(['img', 'info', 'cut.ova'], { cwd: dir });
  assert.notEqual(cut.code, 0);
  assert.match(cut.stderr, /extends past the end of the archive/);
  await runOk('tar', ['-C', dir, '-cf', join(dir, 'missing.ova'), 'appliance.ovf', 'disk1.vmdk']);
  const missing = await diskhub(['img', 'convert', '-O', 'raw', 'missing.ova:1', 'x.raw'], { cwd: dir });
  assert.notEqual(missing.code, 0);
  assert.match(missing.stderr, /disk 1 \(disk2\.vmdk\) is not in the archive/);
});
