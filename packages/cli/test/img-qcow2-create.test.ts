/**
 * `diskhub img create -f qcow2` side by side with qemu-img: the "Formatting" line, option
 * errors and exit codes are the same, and the files we make pass `qemu-img check` and give
 * the same `qemu-img info` as qemu-img's own for every option combination.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { needs, tempDir, qemuImg, run, diskhub } from '@diskhub/testkit';
import { assertSame } from './peer.js';

test('qcow2 create: Formatting line, options and the file itself agree with qemu-img', needs('qemu-img'), async (t) => {
  const dir = await tempDir(t);
  await qemuImg('create', '-q', '-f', 'qcow2', join(dir, 'b.qcow2'), '32M');
  const variants = [
    ['1G'], ['-o', 'cluster_size=4k', '100M'], ['-o', 'compat=0.10', '1M'], ['-o', 'compat=v3,lazy_refcounts=on', '1M'],
    ['-o', 'extended_l2=on', '1M'], ['-o', 'refcount_bits=8', '1M'], ['-o', 'compression_type=zstd', '1M'],
    ['-o', 'preallocation=metadata', '5M'], ['-o', 'preallocation=full', '3M'], ['-b', 'b.qcow2', '-F', 'qcow2'],
    ['-b', 'b.qcow2', '-F', 'qcow2', '64M'], ['-u', '-b', 'nonexistent.qcow2', '-F', 'qcow2', '1M'],
    ['-o', 'cluster_size=3k', '1M'], ['-o', 'cluster_size=abc', '1M'], ['-o', 'lazy_refcounts=maybe', '1M'], ['-o', 'refcount_bits=3', '1M'],
    ['-o', 'preallocation=bad', '1M'], ['-b', 'nonexistent.qcow2', '-F', 'qcow2'], ['-o', 'extended_l2=on,cluster_size=4k', '1M'],
  ];
  for (const [i, v] of variants.entries()) {
    const ours = await diskhub(['img', 'create', '-f', 'qcow2', ...v.slice(0, -1), `o${i}.qcow2`, v[v.length - 1]!].filter((a) => a !== undefined), { cwd: dir });
    const peer = await run('qemu-img', ['create', '-f', 'qcow2', ...v.slice(0, -1), `p${i}.qcow2`, v[v.length - 1]!], { cwd: dir });
    const norm = (s: string) => s.replace(/[op]\d+\.qcow2/g, 'X');
    assert.equal(norm(ours.stdout), norm(peer.stdout), `stdout of ${v.join(' ')}`);
    assert.equal(norm(ours.stderr), norm(peer.stderr), `stderr of ${v.join(' ')}`);
    assert.equal(ours.code, peer.code, `exit of ${v.join(' ')}`);
    if (peer.code !== 0 || v.includes('-u')) continue;
    const check = await run('qemu-img', ['check', join(dir, `o${i}.qcow2`)]);
    assert.equal(check.code, 0, `qemu-img check of ${v.join(' ')}: ${check.stdout}${check.stderr}`);
    const info = (f: string) => qemuImg('info', '--output=json', join(dir, f)).then((s) => { const j = JSON.parse(s); delete j.filename; delete j['actual-size']; return j; });
    assert.deepEqual(await info(`o${i}.qcow2`), await info(`p${i}.qcow2`), `qemu-img info of ${v.join(' ')}`);
  }
  await assertSame(['create', '-f', 'qcow2', '-o', 'help'], dir);
  await assertSame(['create', '-f', 'qcow2', '-o', '?', 'x.qcow2'], dir);
  await assertSame(['create', '-f', 'qcow2', '-b', 'b.qcow2', 'nofmt.qcow2'], dir);
});


test('qcow2 create: every cluster size, refcount width and preallocation passes qemu-img check; common layouts are byte-identical to qemu-img\'s', needs('qemu-img'), async (t) => {
  const dir = await tempDir(t);
  // [options..., size, whether QEMU's incremental allocator lays it out as we do]
  const variants: Array<[...string[], boolean]> = [
    ['-o', 'cluster_size=512', '2G', false], ['-o', 'cluster_size=512,refcount_bits=1', '64M', false], ['-o', 'cluster_size=512,refcount_bits=64', '64M', false],
    ['-o', 'cluster_size=2M', '5T', true], ['10G', true], ['-o', 'cluster_size=8k,refcount_bits=4', '1G', true],
    ['-o', 'preallocation=metadata,cluster_size=4k', '30M', false], ['-o', 'preallocation=metadata,extended_l2=on', '70M', false],
    ['-o', 'data_file=DATA,data_file_raw=on', '2M', false], ['-o', 'refcount_bits=2,preallocation=metadata,cluster_size=1k', '8M', false],
  ];
  const { readFile } = await import('node:fs/promises');
  for (const [i, spec] of variants.entries()) {
    const sameLayout = spec[spec.length - 1] as boolean;
    const v = spec.slice(0, -1) as string[];
    const args = (who: string) => v.map((a) => a.replace('DATA', join(dir, `${who}${i}.data`)));
    const ours = await diskhub(['img', 'create', '-q', '-f', 'qcow2', ...args('o').slice(0, -1), join(dir, `o${i}.qcow2`), v[v.length - 1]!]);
    assert.equal(ours.code, 0, ours.stderr);
    await qemuImg('create', '-q', '-f', 'qcow2', ...args('p').slice(0, -1), join(dir, `p${i}.qcow2`), v[v.length - 1]!);
    const check = await run('qemu-img', ['check', join(dir, `o${i}.qcow2`)]);
    assert.equal(check.code, 0, `${v.join(' ')}: ${check.stdout}`);
      const [a, b] = [await readFile(join(dir, `o${i}.qcow2`)), await readFile(join(dir, `p${i}.qcow2`))];
    assert.equal(a.length, b.length, `${v.join(' ')}: file size`);
    if (sameLayout) assert.ok(a.equals(b), `${v.join(' ')}: bytes differ from qemu-img's`);
  }
});
