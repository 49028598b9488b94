/** `diskhub img config-drive`, read back with isoinfo (genisoimage) as cloud-init's ConfigDrive and NoCloud sources would find it. */
import test from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { needs, tempDir, diskhub, runOk } from '@diskhub/testkit';

const UUID = '3f2a6c1e-8d4b-4f6a-9c2e-1b7d5e9a0c11';

async function extract(iso: string, path: string, dir: string): Promise<Buffer> {
  const out = join(dir, 'extracted');
  await runOk('sh', ['-c', 'isoinfo -R -x "$1" -i "$2" > "$3"', 'sh', path, iso, out]);
  return readFile(out);
}

test('img config-drive: the OpenStack layout in a config-2 ISO with Rock Ridge and Joliet', needs('isoinfo'), async (t) => {
  const dir = await tempDir(t);
  const userData = '#cloud-config\nhostname: ignored\nruncmd:\n  - [touch, /root/ran]\n';
  const network = { links: [{ id: 'eth0', type: 'phy', ethernet_mac_address: 'fa:16:3e:00:00:01' }], networks: [{ id: 'n0', link: 'eth0', type: 'ipv4_dhcp' }], services: [] };
  await writeFile(join(dir, 'ud'), userData);
  await writeFile(join(dir, 'nd.json'), JSON.stringify(network));
  await writeFile(join(dir, 'vd.json'), '{"cloud-init": "#cloud-config\\n"}');
  await writeFile(join(dir, 'key.pub'), 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample user@host\n');
  await writeFile(join(dir, 'meta.json'), JSON.stringify({ meta: { role: 'web' }, availability_zone: 'az1' }));
  const r = await diskhub(['img', 'config-drive', '-o', 'cd.iso', '--user-data', 'ud', '--network-data', 'nd.json', '--vendor-data', 'vd.json', '--ssh-key', 'key.pub', '--meta-data', 'meta.json', '--hostname', 'vm1', '--uuid', UUID], { cwd: dir });
  assert.equal(r.code, 0, r.stderr);
  const iso = join(dir, 'cd.iso');
  const d = await runOk('isoinfo', ['-d', '-i', iso]);
  assert.match(d, /^Volume id: config-2$/m);
  assert.match(d, /^Joliet with UCS level 3 found$/m);
  assert.match(d, /^Rock Ridge signatures version 1 found$/m);
  assert.match(await runOk('blkid', ['-o', 'export', iso]), /^LABEL=config-2$/m);
  const paths = new Set((await runOk('isoinfo', ['-R', '-f', '-i', iso])).split('\n').filter(Boolean));
  for (const p of ['/openstack/latest/meta_data.json', '/openstack/latest/user_data', '/openstack/latest/network_data.json', '/openstack/latest/vendor_data.json',
    '/openstack/2012-08-10/meta_data.json', '/openstack/2012-08-10/user_data', '/openstack/2015-10-15/network_data.json', '/ec2/latest/meta-data.json', '/ec2/2009-04-04/user-data']) {
    assert.ok(paths.has(p), `${p} in the drive`);
  }
  // Files appear only from the version that introduced them, as Nova writes them.
  assert.ok(!paths.has('/openstack/2012-08-10/network_data.json'));
  assert.ok(!paths.has('/openstack/2013-04-04/vendor_data.json'));
  const joliet = new Set((await runOk('isoinfo', ['-J', '-f', '-i', iso])).split('\n').filter(Boolean).map((p) => p.replace(/;1$/, '')));
  assert.deepEqual(joliet, paths);
  assert.equal((await extract(iso, '/openstack/latest/user_data', dir)).toString(), userData);
  assert.deepEqual(JSON.parse((await extract(iso, '/openstack/latest/network_data.json', dir)).toString()), network);
  const meta = JSON.parse((await extract(iso, '/openstack/latest/meta_data.json', dir)).toString());
  assert.equal(meta.uuid, UUID);
  assert.equal(meta.hostname, 'vm1');
  assert.deepEqual(meta.meta, { role: 'web' });
  assert.equal(meta.availability_zone, 'az1');
  assert.deepEqual(meta.public_keys, { default: 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample user@host' });
  assert.equal(Buffer.from(meta.random_seed, 'base64').length, 512);
  const ec2 = JSON.parse((await extract(iso, '/ec2/latest/meta-data.json', dir)).toString());
  assert.equal(ec2['public-keys']['0']['openssh-key'], 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample user@host');
  // Sizes in the Rock Ridge listing are the files' sizes.
  assert.match(await runOk('isoinfo', ['-R', '-l', '-i', iso]), new RegExp(`^-r--r--r-- +1 +0 +0 +${Buffer.byteLength(userData)} .* user_data $`, 'm'));
});

test('img config-drive: the same tree, modes and sizes as the drive Nova makes with genisoimage', needs('isoinfo', 'genisoimage'), async (t) => {
  const dir = await tempDir(t);
  await writeFile(join(dir, 'ud'), '#!/bin/sh\necho hello\n');
  await writeFile(join(dir, 'nd.json'), '{"links": [], "networks": [], "services": []}');
  const r = await diskhub(['img', 'config-drive', '-o', 'ours.iso', '--user-data', 'ud', '--network-data', 'nd.json', '--hostname', 'vm2', '--uuid', UUID], { cwd: dir });
  assert.equal(r.code, 0, r.stderr);
  const ours = join(dir, 'ours.iso');
  // Our files, extracted, laid out in a directory and made into a drive as nova/virt/configdrive.py does.
  const tree = join(dir, 'tree');
  const paths = (await runOk('isoinfo', ['-R', '-f', '-i', ours])).split('\n').filter(Boolean);
  const files = paths.filter((p) => /\.json$|_data$|-data$/.test(p));
  for (const p of paths) await mkdir(join(tree, files.includes(p) ? dirname(p) : p), { recursive: true });
  for (const p of files) await writeFile(join(tree, p), await extract(ours, p, dir));
  const nova = join(dir, 'nova.iso');
  await runOk('genisoimage', ['-o', nova, '-ldots', '-allow-lowercase', '-allow-multidot', '-l', '-publisher', 'OpenStack Compute', '-quiet', '-J', '-r', '-V', 'config-2', tree]);
  // Every path with its kind, mode, owner and size, through Rock Ridge.
  const entries = async (iso: string) => {
    const out = new Set<string>();
    let dirName = '';
    for (const line of (await runOk('isoinfo', ['-R', '-l', '-i', iso])).split('\n')) {
      const d = /^Directory listing of (.*)$/.exec(line);
      if (d) { dirName = d[1]!; continue; }
      const m = /^([-d][-rwx]{9}) +\d+ +(\d+) +(\d+) +(\d+) .*\] +(.+?) $/.exec(line);
      if (!m || m[5] === '.' || m[5] === '..') continue;
      out.add(`${dirName}${m[5]} ${m[1]} ${m[2]}:${m[3]} ${m[1]!.startsWith('d') ? '' : m[4]}`);
    }
    return out;
  };
  const ourEntries = await entries(ours);
  assert.equal(ourEntries.size, paths.length, 'every path parsed from the listing');
  assert.deepEqual(ourEntries, await entries(nova));
  const label = async (iso: string) => (await runOk('isoinfo', ['-d', '-i', iso])).split('\n').filter((l) => /^(Volume id|Logical block size|Joliet|Rock Ridge)/.test(l));
  assert.deepEqual(await label(ours), await label(nova));
});

test('img config-drive --nocloud: a cidata seed with meta-data, user-data, network-config', needs('isoinfo'), async (t) => {
  const dir = await tempDir(t);
  await writeFile(join(dir, 'ud'), '#cloud-config\n');
  await writeFile(join(dir, 'net.yaml'), 'version: 2\nethernets:\n  eth0:\n    dhcp4: true\n');
  await writeFile(join(dir, 'key.pub'), 'ssh-rsa AAAAB3Nza k1\nssh-ed25519 AAAAC3Nza k2\n');
  const r = await diskhub(['img', 'config-drive', '--nocloud', '-o', 'seed.iso', '--user-data', 'ud', '--network-data', 'net.yaml', '--ssh-key', 'key.pub', '--hostname', 'seed1', '--uuid', UUID], { cwd: dir });
  assert.equal(r.code, 0, r.stderr);
  const iso = join(dir, 'seed.iso');
  assert.match(await runOk('isoinfo', ['-d', '-i', iso]), /^Volume id: cidata$/m);
  assert.deepEqual((await runOk('isoinfo', ['-R', '-f', '-i', iso])).split('\n').filter(Boolean).sort(), ['/meta-data', '/network-config', '/user-data']);
  assert.equal((await extract(iso, '/meta-data', dir)).toString(), `instance-id: "${UUID}"\nlocal-hostname: "seed1"\npublic-keys:\n  - "ssh-rsa AAAAB3Nza k1"\n  - "ssh-ed25519 AAAAC3Nza k2"\n`);
  assert.equal((await extract(iso, '/network-config', dir)).toString(), 'version: 2\nethernets:\n  eth0:\n    dhcp4: true\n');
});

test('img config-drive: bad input is a clear error and leaves no file', async (t) => {
  const dir = await tempDir(t);
  await writeFile(join(dir, 'bad.json'), '{not json');
  await writeFile(join(dir, 'list.json'), '[1]');
  const cases: [string[], RegExp][] = [
    [['--meta-data', 'bad.json'], /the meta-data file 'bad.json' is not JSON/],
    [['--meta-data', 'list.json'], /must hold a JSON object/],
    [['--network-data', 'bad.json'], /the network-data file 'bad.json' is not JSON/],
    [['--user-data', 'missing'], /cannot read the user-data file 'missing'/],
    [['--format', 'vfat'], /config-drive format 'vfat' is not supported/],
  ];
  for (const [args, message] of cases) {
    const r = await diskhub(['img', 'config-drive', '-o', 'out.iso', ...args], { cwd: dir });
    assert.equal(r.code, 1, args.join(' '));
    assert.match(r.stderr, message);
  }
  const noOut = await diskhub(['img', 'config-drive'], { cwd: dir });
  assert.equal(noOut.code, 1);
  assert.match(noOut.stderr, /needs -o OUT/);
  assert.deepEqual((await readdir(dir)).sort(), ['bad.json', 'list.json']);
});
