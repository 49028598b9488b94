/**
 * `img inspect --output=json` side by side with libguestfs's virt-inspector on one image: a
 * real Debian bookworm root (testkit's debianRootfs, hard-linked) on a GPT disk with an EFI
 * system partition, /boot and /var on partitions of their own named by UUID=, LABEL=,
 * PARTUUID= and /dev/sda4 in its fstab (testkit's multiPartitionDisk: sfdisk, mkfs.vfat +
 * mcopy, mkfs.ext4 -d), as qcow2. virt-inspector boots its appliance once (under TCG here,
 * LIBGUESTFS_BACKEND=direct with force_tcg: 30-90 s); its XML is read with python3's
 * xml.etree. Both must say the same: type, distro, version, product name, hostname, arch,
 * osinfo, package format and management, mount points, filesystems (type, label, UUID), and every application
 * with its epoch, version, release and arch — except where virt-inspector is less precise,
 * which is asserted to be exactly that (splitPackageVersion's comment: libguestfs splits a dpkg
 * version at its first hyphen, dpkg at its last).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { MULTI_PARTITION, debianRootfs, diskhub, multiPartitionDisk, needs, run, runOk, tempDir, treeCopy } from '@diskhub/testkit';

const GUESTFS_ENV = { ...process.env, LIBGUESTFS_BACKEND: 'direct', LIBGUESTFS_BACKEND_SETTINGS: 'force_tcg' };

/** virt-inspector's XML as JSON: the first operating system's elements, its mount points, filesystems and applications. */
const XML_TO_JSON = `
import json, sys, xml.etree.ElementTree as ET
os_ = ET.parse(sys.stdin).getroot().find('operatingsystem')
out = {c.tag: c.text for c in os_ if len(c) == 0}
out['mountpoints'] = sorted([m.get('dev'), m.text] for m in os_.find('mountpoints'))
out['filesystems'] = sorted([f.get('dev'), *(f.findtext(k) for k in ('type', 'label', 'uuid'))] for f in os_.find('filesystems'))
out['applications'] = [{c.tag: c.text for c in a} for a in os_.find('applications')]
json.dump(out, sys.stdout)
`;

interface Application { name: string; epoch: number; version: string; release: string; arch: string | null }

const rootOnly = process.getuid?.() === 0 || process.env.CI === 'true' ? {} : { skip: 'debootstrap and chroot need root (the Debian root filesystem cache)' };

test('img inspect --output=json says what virt-inspector says of a Debian root with /boot, /boot/efi and /var on their own partitions',
  { ...needs('virt-inspector', 'python3', 'debootstrap', 'sfdisk', 'mkfs.vfat', 'mcopy', 'mkfs.ext4', 'qemu-img'), ...rootOnly, timeout: 30 * 60_000 }, async (t) => {
    const tree = await debianRootfs();
    const dir = await tempDir(t);
    const root = join(dir, 'root');
    await treeCopy(tree, root);
    const { qcow2 } = await multiPartitionDisk(dir, root, 'debian', { rootMiB: 1100, varMiB: 160 });

    const peer = await run('virt-inspector', ['--format=qcow2', '-a', qcow2], { env: GUESTFS_ENV, timeoutMs: 20 * 60_000 });
    assert.equal(peer.code, 0, peer.stderr);
    const vi = JSON.parse(await runOk('python3', ['-c', XML_TO_JSON], { input: peer.stdout }));

    const r = await diskhub(['img', 'inspect', '--output=json', qcow2]);
    assert.equal(r.code, 0, r.stderr);
    const j = JSON.parse(r.stdout);
    assert.equal(j.operatingsystems.length, 1);
    const os = j.operatingsystems[0];

    for (const key of ['root', 'name', 'arch', 'distro', 'product_name', 'major_version', 'minor_version', 'package_format', 'package_management', 'hostname', 'osinfo']) {
      assert.equal(String(os[key]), vi[key], key);
    }
    assert.equal(os.product_name, (await runOk('head', ['-n1', join(tree, 'etc/debian_version')])).trim());
    // libguestfs 1.48 (Debian 12's) resolves UUID= and LABEL= fstab specs and device names but
    // not PARTUUID= (its guestfsd holds the strings "UUID=" and "LABEL=" and no "PARTUUID="), so
    // it leaves the ESP's /boot/efi out, which the kernel (mount, systemd) mounts: we keep it.
    assert.deepEqual(vi.mountpoints.map((m: string[]) => m[1]).sort(), ['/', '/boot', '/var']);
    assert.deepEqual(os.mountpoints.map((m: { device: string; mountpoint: string }) => [m.device, m.mountpoint]).sort(), [...vi.mountpoints, ['/dev/sda1', '/boot/efi']].sort());
    assert.equal(os.mountpoints.find((m: { mountpoint: string }) => m.mountpoint === '/boot/efi').spec, `PARTUUID=${MULTI_PARTITION.espPartuuid}`);
    // virt-inspector's <filesystems> are the ones its fstab names (the swap line's /dev/sda5 too,
    // which the disk does not have: no type); ours are the disk's, each found one with the same type, label and UUID.
    const fsList = j.filesystems.map((f: { device: string; type: string; label: string | null; uuid: string | null }) => [f.device, f.type, f.label, f.uuid]);
    assert.deepEqual(vi.filesystems.filter((f: (string | null)[]) => f[1] === null), [['/dev/sda5', null, null, null]]);
    for (const f of vi.filesystems.filter((x: (string | null)[]) => x[1] !== null)) assert.ok(fsList.some((o: unknown) => JSON.stringify(o) === JSON.stringify(f)), JSON.stringify(f));
    assert.deepEqual(fsList.map((f: string[]) => f[0]), ['/dev/sda1', '/dev/sda2', '/dev/sda3', '/dev/sda4']);

    // Applications: the same packages; epoch, arch equal; version and release equal, or split
    // at another hyphen of the same string where the upstream version has one (virt-inspector
    // splits at the first hyphen; dpkg, and we, at the last).
    const ours = new Map<string, Application>(os.applications.map((a: Application) => [a.name, a]));
    assert.deepEqual([...ours.keys()].sort(), vi.applications.map((a: { name: string }) => a.name).sort());
    const differentSplit: string[] = [];
    for (const a of vi.applications as Record<string, string>[]) {
      const o = ours.get(a.name!)!;
      assert.equal(o.epoch, Number(a.epoch ?? 0), `${a.name} epoch`);
      assert.equal(o.arch, a.arch ?? null, `${a.name} arch`);
      const joined = (v: string, rel: string) => (rel ? `${v}-${rel}` : v);
      assert.equal(joined(o.version, o.release), joined(a.version ?? '', a.release ?? ''), `${a.name} version`);
      if (o.version !== (a.version ?? '') || o.release !== (a.release ?? '')) {
        assert.ok(o.version.startsWith(`${a.version}-`) && !o.release.includes('-'), `${a.name}: ${o.version} ${o.release} against ${a.version} ${a.release}`);
        differentSplit.push(a.name!);
      }
    }
    assert.ok(ours.size > 150, `${ours.size} applications`);
    t.diagnostic(`${ours.size} applications; split at another hyphen by virt-inspector: ${differentSplit.join(', ') || 'none'}`);
  });
