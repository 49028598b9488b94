/**
 * The container format decides nothing about safety: every disk_format × container_format
 * pair is tried with the hostile images inspect.test.ts makes (a qcow2 whose backing file is
 * /etc/passwd, a qcow2 with an external data file, a vmdk whose extent is /etc/shadow), and
 * each is refused with a 400 naming the reason, the image left queued. For archive
 * containers, what is inside is judged too: the same images inside an OVA, a docker tar and
 * a gzip stream are refused, while a real OVA and a gzip of a clean qcow2 are accepted.
 * The archives are made by the real tar and gzip; the images by qemu-img.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { needs, qemuImg, tempDir, runOk } from '@diskhub/testkit';
import { CONTAINER_FORMATS, DISK_FORMATS } from '../src/schemas.js';
import { api, startTestService, token } from './helpers.js';

test('hostile images are refused under every disk_format × container_format pair', needs('qemu-img', 'tar', 'gzip'), async (t) => {
  const dir = await tempDir(t);
  const svc = await startTestService(t);
  const a = api(svc.url, await token(svc.url));
  const upload = async (data: Buffer, disk_format: string, container_format: string) => {
    const id = (await a('POST', '/v2/images', { body: { name: 'hostile', disk_format, container_format } })).json.id as string;
    const put = await a('PUT', `/v2/images/${id}/file`, { raw: data });
    return { put, image: (await a('GET', `/v2/images/${id}`)).json };
  };

  await qemuImg('create', '-q', '-f', 'qcow2', '-b', '/etc/passwd', '-F', 'raw', '-u', join(dir, 'backed.qcow2'), '30M');
  await qemuImg('create', '-q', '-f', 'qcow2', '-o', `data_file=${join(dir, 'host-data.raw')}`, join(dir, 'datafile.qcow2'), '30M');
  await writeFile(join(dir, 'extents.vmdk'), '# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\ncreateType="monolithicFlat"\nRW 8 FLAT "/etc/shadow" 0\n');
  const hostile: Array<[string, RegExp]> = [
    ['backed.qcow2', /backing-file: .*\/etc\/passwd/],
    ['datafile.qcow2', /data-file: .*host-data\.raw/],
    ['extents.vmdk', /extents: .*\/etc\/shadow/],
  ];
  const failures: string[] = [];
  const cases = hostile.flatMap(([file, reason]) => DISK_FORMATS.flatMap((disk) => CONTAINER_FORMATS.map((container) => ({ file, reason, disk, container }))));
  const datas = new Map(await Promise.all(hostile.map(async ([file]) => [file, await readFile(join(dir, file))] as const)));
  // A few uploads at a time (the service takes concurrent uploads; the matrix is 264 of them).
  const worker = async () => {
    for (let c = cases.shift(); c; c = cases.shift()) {
      const { put, image } = await upload(datas.get(c.file)!, c.disk, c.container);
      // ova wants a tar: its refusal names that instead; either way nothing is accepted.
      const why = c.container === 'ova' ? /not an OVA|backing-file|data-file|extents/ : c.reason;
      if (put.status !== 400 || !why.test(put.json?.message ?? '') || image.status !== 'queued' || image.size !== null) {
        failures.push(`${c.file} as ${c.disk}/${c.container}: ${put.status} ${put.json?.message ?? ''} (${image.status})`);
      }
    }
  };
  await Promise.all(Array.from({ length: 6 }, worker));
  assert.deepEqual(failures, []);
});

test('what is inside an archive container is judged: OVA, docker tar, gzip', needs('qemu-img', 'tar', 'gzip'), async (t) => {
  const dir = await tempDir(t);
  const svc = await startTestService(t);
  const a = api(svc.url, await token(svc.url));
  const upload = async (file: string, disk_format: string, container_format: string) => {
    const id = (await a('POST', '/v2/images', { body: { name: file, disk_format, container_format } })).json.id as string;
    const put = await a('PUT', `/v2/images/${id}/file`, { raw: await readFile(join(dir, file)) });
    return { put, image: (await a('GET', `/v2/images/${id}`)).json };
  };
  await qemuImg('create', '-q', '-f', 'qcow2', '-b', '/etc/passwd', '-F', 'raw', '-u', join(dir, 'backed.qcow2'), '30M');
  await qemuImg('create', '-q', '-f', 'qcow2', join(dir, 'clean.qcow2'), '30M');
  await qemuImg('create', '-q', '-f', 'vmdk', '-o', 'subformat=streamOptimized', join(dir, 'disk.vmdk'), '30M');
  await writeFile(join(dir, 'extents.vmdk'), '# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\ncreateType="monolithicFlat"\nRW 8 FLAT "/etc/shadow" 0\n');
  await writeFile(join(dir, 'vm.ovf'), '<?xml version="1.0"?><Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1"/>\n');
  const tar = (out: string, ...members: string[]) => runOk('tar', ['-C', dir, '-cf', join(dir, out), ...members]);
  const gzip = (file: string) => runOk('gzip', ['-k', '-f', join(dir, file)]);
  await tar('good.ova', 'vm.ovf', 'disk.vmdk');
  await tar('backed.ova', 'vm.ovf', 'backed.qcow2');
  await tar('extents.ova', 'vm.ovf', 'extents.vmdk');
  await tar('layer.tar', 'backed.qcow2');
  await tar('docker.tar', 'layer.tar');
  await gzip('backed.qcow2');
  await gzip('clean.qcow2');
  await tar('backed.tar', 'backed.qcow2');
  await gzip('backed.tar');

  for (const [file, disk, container] of [['good.ova', 'vmdk', 'ova'], ['clean.qcow2.gz', 'qcow2', 'compressed']] as const) {
    const { put, image } = await upload(file, disk, container);
    assert.equal(put.status, 204, `${file}: ${put.status} ${put.text}`);
    assert.equal(image.status, 'active');
  }
  for (const [file, disk, container, reason] of [
    ['backed.ova', 'qcow2', 'ova', /backing-file: .*backed\.qcow2.*\/etc\/passwd/],
    ['extents.ova', 'vmdk', 'ova', /extents: .*\/etc\/shadow/],
    ['docker.tar', 'raw', 'docker', /backing-file: .*layer\.tar: backed\.qcow2/],
    ['backed.qcow2.gz', 'qcow2', 'compressed', /backing-file: .*inflated.*\/etc\/passwd/],
    ['backed.tar.gz', 'raw', 'compressed', /backing-file: .*inflated.*backed\.qcow2/],
  ] as const) {
    const { put, image } = await upload(file, disk, container);
    assert.equal(put.status, 400, `${file}: ${put.status} ${put.text}`);
    assert.match(put.json.message, reason, file);
    assert.equal(image.status, 'queued');
  }
});

test('ari, aki and ami take opaque data, but not data that is another known format', needs('qemu-img'), async (t) => {
  const dir = await tempDir(t);
  const svc = await startTestService(t);
  const a = api(svc.url, await token(svc.url));
  await qemuImg('create', '-q', '-f', 'qcow2', join(dir, 'q.qcow2'), '1M');
  const qcow2 = await readFile(join(dir, 'q.qcow2'));
  for (const disk_format of ['ari', 'aki', 'ami']) {
    const opaque = Buffer.alloc(4096, 0x5a);
    const id = (await a('POST', '/v2/images', { body: { disk_format, container_format: 'bare' } })).json.id;
    assert.equal((await a('PUT', `/v2/images/${id}/file`, { raw: opaque })).status, 204, disk_format);
    const id2 = (await a('POST', '/v2/images', { body: { disk_format, container_format: 'bare' } })).json.id;
    const put = await a('PUT', `/v2/images/${id2}/file`, { raw: qcow2 });
    assert.equal(put.status, 400, disk_format);
    assert.match(put.json.message, new RegExp(`the data is in qcow2 format, not the declared ${disk_format}`));
  }
});
