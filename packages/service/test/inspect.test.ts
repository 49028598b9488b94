/**
 * Upload inspection: images made by qemu-img go in as the declared disk_format and come out
 * active with qemu-img's virtual size; unsafe ones (backing file, vmdk extents naming host
 * files, a qcow2 inside an ISO) and ones that lie about their format are refused with a 400
 * naming the reason, the image stays queued, and no data is kept.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { needs, qemuImg, qemuIo, tempDir, run } from '@diskhub/testkit';
import { api, startTestService, token } from './helpers.js';

test('upload inspection: real virtual sizes for every format, refusals for unsafe or mislabelled data', needs('qemu-img', 'genisoimage'), async (t) => {
  const dir = await tempDir(t);
  const svc = await startTestService(t);
  const a = api(svc.url, await token(svc.url));
  const upload = async (file: string, disk_format: string, container_format = 'bare') => {
    const id = (await a('POST', '/v2/images', { body: { name: file, disk_format, container_format } })).json.id as string;
    const put = await a('PUT', `/v2/images/${id}/file`, { raw: await readFile(join(dir, file)) });
    return { id, put, image: (await a('GET', `/v2/images/${id}`)).json };
  };

  const good: Array<[string, string, string, string]> = [
    ['a.qcow2', 'qcow2', '', 'qcow2'],
    ['a.vmdk', 'vmdk', 'subformat=streamOptimized', 'vmdk'],
    ['a.vhd', 'vpc', '', 'vhd'],
    ['a.vhdx', 'vhdx', '', 'vhdx'],
    ['a.vdi', 'vdi', '', 'vdi'],
    ['a.raw', 'raw', '', 'raw'],
  ];
  for (const [file, fmt, opts, disk_format] of good) {
    await qemuImg('create', '-q', '-f', fmt, ...(opts ? ['-o', opts] : []), join(dir, file), '30M');
    if (fmt === 'qcow2') await qemuIo('-f', 'qcow2', '-c', 'write -P 9 0 1M', join(dir, file));
    const { put, image } = await upload(file, disk_format);
    assert.equal(put.status, 204, `${file}: ${JSON.stringify(put.json)}`);
    assert.equal(image.status, 'active');
    const peer = JSON.parse(await qemuImg('info', '-f', fmt, '--output=json', join(dir, file)));
    assert.equal(image.virtual_size, peer['virtual-size'], file);
  }

  const refused = async (file: string, disk_format: string, reason: RegExp, container_format = 'bare') => {
    const { put, image } = await upload(file, disk_format, container_format);
    assert.equal(put.status, 400, `${file}: ${put.status} ${JSON.stringify(put.json)}`);
    assert.match(put.json.message, reason, file);
    assert.equal(image.status, 'queued', file);
    assert.equal(image.size, null);
  };
  await qemuImg('create', '-q', '-f', 'qcow2', '-b', '/etc/passwd', '-F', 'raw', '-u', join(dir, 'backed.qcow2'), '30M');
  await refused('backed.qcow2', 'qcow2', /backing-file: .*"\/etc\/passwd"/);
  await writeFile(join(dir, 'evil.vmdk'), '# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\ncreateType="monolithicFlat"\nRW 8 FLAT "/etc/shadow" 0\n');
  await refused('evil.vmdk', 'vmdk', /extents: .*"\/etc\/shadow"/);
  // The CVE-2024-32498 pattern: a qcow2 header uploaded as raw.
  await refused('a.qcow2', 'raw', /format-mismatch: the data is in qcow2 format, not the declared raw/);
  await refused('a.raw', 'vhdx', /format-mismatch/);
  // A qcow2 header planted in an ISO's system area.
  await writeFile(join(dir, 'x.txt'), 'x');
  await run('genisoimage', ['-quiet', '-o', join(dir, 'q.iso'), join(dir, 'x.txt')]);
  const iso = new Uint8Array(await readFile(join(dir, 'q.iso')));
  iso.set((await readFile(join(dir, 'a.qcow2'))).subarray(0, 512), 0);
  await writeFile(join(dir, 'q.iso'), iso);
  await refused('q.iso', 'iso', /ambiguous: the data is both qcow2 and iso/);
  await refused('a.qcow2', 'vmdk', /not an OVA/, 'ova');
  // Only the accepted images' data is stored.
  assert.equal((await readdir(join(svc.dataDir, 'images'))).length, good.length);
});
