/**
 * `diskhub img` on vmdk side by side with qemu-img 7.2: create of every subformat (options,
 * "Formatting" line, the same files and descriptor apart from the random CID), create errors,
 * info and map of qemu-made images, and converts into every subformat that qemu-img check
 * passes and qemu-img compare finds identical to the source.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { readFile, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { needs, tempDir, qemuImg, qemuIo, run, diskhub } from '@diskhub/testkit';
import { assertSame } from './peer.js';

const SUBFORMATS = ['monolithicSparse', 'monolithicFlat', 'twoGbMaxExtentSparse', 'twoGbMaxExtentFlat', 'streamOptimized'];
/** The bytes with the random CID taken out (its length varies, so the zero padding after the descriptor does too). */
const noCid = (b: Buffer) => b.toString('latin1').replace(/(^|[^A-Za-z])CID=[0-9a-f]+/m, '$1CID=x').replace(/\0+/g, '\0');

test('vmdk create: every subformat and option as qemu-img (files, layout, descriptor)', needs('qemu-img'), async (t) => {
  const dir = await tempDir(t);
  await assertSame(['create', '-f', 'vmdk', '-o', 'help'], dir);
  const variants: [string, string[], string][] = [
    ...SUBFORMATS.map((s): [string, string[], string] => [s, ['-o', `subformat=${s}`], '3G']),
    ['opts', ['-o', 'adapter_type=lsilogic,hwversion=6,toolsversion=123,zeroed_grain=on'], '1000001'],
    ['compat6', ['-o', 'compat6=on,adapter_type=buslogic'], '5M'],
  ];
  for (const [name, opts, size] of variants) {
    await run('mkdir', ['-p', join(dir, 'ours'), join(dir, 'peer')]);
    const args = ['create', '-f', 'vmdk', ...opts, `${name}.vmdk`, size];
    const peer = await run('qemu-img', args, { cwd: join(dir, 'peer') });
    const ours = await diskhub(['img', ...args], { cwd: join(dir, 'ours') });
    assert.equal(ours.code, 0, `${name}: ${ours.stderr}`);
    assert.equal(ours.stdout, peer.stdout, `${name}: Formatting line`);
    const files = (await readdir(join(dir, 'peer'))).filter((f) => f.startsWith(name)).sort();
    assert.deepEqual((await readdir(join(dir, 'ours'))).filter((f) => f.startsWith(name)).sort(), files, `${name}: files`);
    for (const f of files) {
      const [oursSize, peerSize] = [(await stat(join(dir, 'ours', f))).size, (await stat(join(dir, 'peer', f))).size];
      if (peerSize > 16 << 20) { // a flat extent: a hole of the extent's size
        assert.equal(oursSize, peerSize, `${name}/${f}: length`);
        continue;
      }
      const ours = await readFile(join(dir, 'ours', f));
      const peer = await readFile(join(dir, 'peer', f));
      // A separate descriptor file is as long as its text, and the random CID is printed
      // without leading zeroes (as QEMU does): its length is compared with the CID taken out.
      if (!peer.subarray(0, 21).equals(Buffer.from('# Disk DescriptorFile'))) assert.equal(oursSize, peerSize, `${name}/${f}: length`);
      assert.ok(noCid(ours) === noCid(peer), `${name}/${f}: bytes apart from the CID`);
    }
    const check = await run('qemu-img', ['check', join(dir, 'ours', `${name}.vmdk`)]);
    assert.equal(check.code, 0, `${name}: qemu-img check: ${check.stdout}${check.stderr}`);
  }
});

test('vmdk create errors read like qemu-img', needs('qemu-img'), async (t) => {
  const dir = await tempDir(t);
  await qemuImg('create', '-q', '-f', 'qcow2', join(dir, 'q.qcow2'), '1M');
  for (const opts of [
    ['-o', 'adapter_type=foo'], ['-o', 'subformat=foo'], ['-o', 'compat6=on,hwversion=7'],
    ['-o', 'subformat=monolithicFlat,zeroed_grain=on'], ['-o', 'subformat=monolithicFlat', '-b', 'q.qcow2', '-F', 'qcow2'],
    ['-b', 'q.qcow2', '-F', 'qcow2'], ['-b', 'q.qcow2', '-F', 'vmdk'],
  ]) {
    const args = ['create', '-f', 'vmdk', ...opts, 'x.vmdk', '1M'];
    const ours = await diskhub(['img', ...args], { cwd: dir });
    const peer = await run('qemu-img', args, { cwd: dir });
    assert.equal(ours.code, peer.code, `${opts.join(' ')}: exit code (${ours.stderr} / ${peer.stderr})`);
    assert.equal(ours.stderr.split('\n').at(-2), peer.stderr.split('\n').at(-2), `${opts.join(' ')}: message`);
  }
});

test('vmdk delta disks: diskhub creates a child that qemu-io writes and qemu-img reads through', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  await qemuImg('create', '-q', '-f', 'vmdk', join(dir, 'base.vmdk'), '4M');
  await qemuIo('-f', 'vmdk', '-c', 'write -P 0x21 0 4M', join(dir, 'base.vmdk'));
  const r = await diskhub(['img', 'create', '-f', 'vmdk', '-b', 'base.vmdk', '-F', 'vmdk', 'top.vmdk'], { cwd: dir });
  assert.equal(r.code, 0, r.stderr);
  await qemuIo('-f', 'vmdk', '-c', 'write -P 0x22 100000 5000', join(dir, 'top.vmdk'));
  const cmp = await run('qemu-img', ['compare', join(dir, 'top.vmdk'), join(dir, 'top.vmdk')]);
  assert.equal(cmp.code, 0);
  await assertSame(['info', '--output=json', '--backing-chain', 'top.vmdk'], dir).catch(async () => {
    // actual-size may differ by host allocation: compare without it.
    const strip = (s: string) => JSON.parse(s).map((i: Record<string, unknown>) => ({ ...i, 'actual-size': 0 }));
    const ours = await diskhub(['img', 'info', '--output=json', '--backing-chain', 'top.vmdk'], { cwd: dir });
    const peer = await run('qemu-img', ['info', '--output=json', '--backing-chain', 'top.vmdk'], { cwd: dir });
    assert.deepEqual(strip(ours.stdout), strip(peer.stdout));
  });
  const raw = await diskhub(['img', 'convert', '-O', 'raw', 'top.vmdk', 'top.raw'], { cwd: dir });
  assert.equal(raw.code, 0, raw.stderr);
  const cmp2 = await run('qemu-img', ['compare', '-F', 'raw', join(dir, 'top.vmdk'), join(dir, 'top.raw')]);
  assert.equal(cmp2.code, 0, cmp2.stdout);
});

test('vmdk convert: qcow2 → every vmdk subformat → qcow2 pass qemu-img check and compare identical', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  const src = join(dir, 'src.qcow2');
  await qemuImg('create', '-q', '-f', 'qcow2', src, '2400000000');
  await qemuIo('-f', 'qcow2', '-c', 'write -P 0x11 1000 300000', '-c', 'write -P 0x22 65530 12', '-c', 'write -z 131072 65536',
    '-c', 'write -P 0x33 2147483000 2000', '-c', 'write -P 0x44 2300000001 70001', '-c', 'write -P 0x55 2399999488 512', src);
  for (const sub of SUBFORMATS) {
    const out = `out-${sub}.vmdk`;
    const r = await diskhub(['img', 'convert', '-O', 'vmdk', '-o', `subformat=${sub}`, src, out], { cwd: dir });
    assert.equal(r.code, 0, `${sub}: ${r.stderr}`);
    const check = await run('qemu-img', ['check', join(dir, out)]);
    assert.equal(check.code, 0, `${sub}: qemu-img check: ${check.stdout}${check.stderr}`);
    const cmp = await run('qemu-img', ['compare', src, join(dir, out)]);
    assert.equal(cmp.code, 0, `${sub}: qemu-img compare: ${cmp.stdout}${cmp.stderr}`);
    const info = JSON.parse(await qemuImg('info', '--output=json', join(dir, out)));
    assert.equal(info['format-specific'].data['create-type'], sub);
    const back = await diskhub(['img', 'convert', '-O', 'qcow2', out, `back-${sub}.qcow2`], { cwd: dir });
    assert.equal(back.code, 0, back.stderr);
    const cmp2 = await run('qemu-img', ['compare', src, join(dir, `back-${sub}.qcow2`)]);
    assert.equal(cmp2.code, 0, `${sub}: round trip: ${cmp2.stdout}`);
  }
  // The same with -c (qemu-img accepts it for vmdk: the writes are plain ones except in streamOptimized).
  const c = await diskhub(['img', 'convert', '-c', '-O', 'vmdk', '-o', 'subformat=streamOptimized', src, 'c.vmdk'], { cwd: dir });
  assert.equal(c.code, 0, c.stderr);
  assert.equal((await run('qemu-img', ['compare', src, join(dir, 'c.vmdk')])).code, 0);
});

test('vmdk info and map of qemu-made images print what qemu-img prints', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  await qemuImg('create', '-q', '-f', 'vmdk', '-o', 'zeroed_grain=on', join(dir, 'z.vmdk'), '10M');
  await qemuIo('-f', 'vmdk', '-c', 'write -P 0x11 1000 70000', '-c', 'write -z 1M 128k', join(dir, 'z.vmdk'));
  await qemuImg('create', '-q', '-f', 'vmdk', '-o', 'subformat=twoGbMaxExtentSparse', join(dir, 't.vmdk'), '3G');
  await qemuIo('-f', 'vmdk', '-c', 'write -P 0x11 2147418112 131072', join(dir, 't.vmdk'));
  for (const f of ['z.vmdk', 't.vmdk']) {
    await assertSame(['map', '--output=json', f], dir);
    await assertSame(['map', f], dir);
    await assertSame(['check', f], dir);
  }
});
