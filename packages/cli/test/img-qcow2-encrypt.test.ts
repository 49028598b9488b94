/**
 * Encrypted images side by side with qemu-img: qcow2 with encrypt.format=luks (the default
 * aes-256-xts-plain64/sha256, and aes-128-cbc-essiv) and raw LUKS containers, made by
 * qemu-img and written by qemu-io, read back byte-exact; info / map / check / compare with
 * the same output; wrong and missing secrets fail as qemu-img does. iter-time is kept tiny so
 * the PBKDF2 work stays in the milliseconds.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { needs, tempDir, run, runOk, diskhub } from '@diskhub/testkit';
import { assertSame, both } from './peer.js';

const PASS = 'pa55 w0rd,x';
/** --object with the passphrase (commas doubled, as QEMU option syntax wants). */
const OBJ = ['--object', `secret,id=sec0,data=${PASS.replace(/,/g, ',,')}`];
const WRONG = ['--object', 'secret,id=sec0,data=not-it'];
const qcowOpts = (f: string) => `driver=qcow2,file.filename=${f},encrypt.key-secret=sec0`;
const luksOpts = (f: string) => `driver=luks,file.filename=${f},key-secret=sec0`;

async function qemuIo(dir: string, imageOpts: string, cmds: string[]): Promise<void> {
  await runOk('qemu-io', [...OBJ, '--image-opts', imageOpts, ...cmds.flatMap((c) => ['-c', c])], { cwd: dir });
}

const PATTERN = ['write -P 0x5a 0 1M', 'write -P 0x11 3M 7k', 'write -P 0x22 5000 1536', 'write -z 4M 64k', 'discard 0 64k'];

/** Encrypted images made by qemu-img and written by qemu-io. */
async function corpus(dir: string): Promise<Array<{ name: string; opts: string }>> {
  const made: Array<{ name: string; opts: string }> = [];
  const mkQcow = async (name: string, o: string, size: string) => {
    await runOk('qemu-img', ['create', '-q', '-f', 'qcow2', ...OBJ, '-o', `encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10${o}`, name, size], { cwd: dir });
    await qemuIo(dir, qcowOpts(name), PATTERN);
    made.push({ name, opts: qcowOpts(name) });
  };
  await mkQcow('xts.qcow2', '', '16M');
  await mkQcow('essiv.qcow2', ',encrypt.cipher-alg=aes-128,encrypt.cipher-mode=cbc,encrypt.ivgen-alg=essiv,encrypt.hash-alg=sha1', '8M');
  await mkQcow('small.qcow2', ',cluster_size=4k,encrypt.ivgen-alg=plain', '6M');
  await runOk('qemu-img', ['create', '-q', '-f', 'luks', ...OBJ, '-o', 'key-secret=sec0,iter-time=10', 'raw.luks', '6M'], { cwd: dir });
  await qemuIo(dir, luksOpts('raw.luks'), PATTERN);
  made.push({ name: 'raw.luks', opts: luksOpts('raw.luks') });
  return made;
}

test('encrypted qcow2 and LUKS made by qemu read back as qemu-img reads them', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  for (const { name, opts } of await corpus(dir)) {
    await runOk('qemu-img', ['convert', ...OBJ, '--image-opts', opts, '-O', 'raw', `${name}.qemu.raw`], { cwd: dir });
    const ours = await diskhub(['img', 'convert', ...OBJ, '--image-opts', opts, '-O', 'raw', `${name}.ours.raw`], { cwd: dir });
    assert.equal(ours.code, 0, `${name}: ${ours.stderr}`);
    assert.ok((await readFile(join(dir, `${name}.ours.raw`))).equals(await readFile(join(dir, `${name}.qemu.raw`))), `${name}: data differs`);
    // Headers need no secret.
    await assertSame(['info', name], dir);
    await assertSame(['info', '--output=json', name], dir);
    await assertSame(['map', '--output=json', ...OBJ, '--image-opts', opts], dir);
    await assertSame(['info', ...OBJ, '--image-opts', opts], dir);
    await assertSame(['info', '--output=json', ...OBJ, '--image-opts', opts], dir);
    await assertSame(['check', ...OBJ, '--image-opts', opts], dir);
    await assertSame(['compare', ...OBJ, '--image-opts', opts, `driver=raw,file.filename=${name}.qemu.raw`], dir);
    // Wrong and missing passphrases, as qemu-img words them (and with its exit codes).
    await assertSame(['convert', ...WRONG, '--image-opts', opts, '-O', 'raw', 'never.raw'], dir);
    await assertSame(['convert', '-O', 'raw', name, 'never.raw'], dir);
    await assertSame(['check', name], dir);
    await assertSame(['map', ...OBJ, '--image-opts', opts.replace('sec0', 'nosuch')], dir);
    const wrong = await diskhub(['img', 'map', ...WRONG, '--image-opts', opts], { cwd: dir });
    assert.match(wrong.stderr, /Invalid password, cannot unlock any keyslot/);
    assert.ok(!wrong.stderr.includes('not-it') && !wrong.stdout.includes('not-it'), 'the secret never shows');
  }
});

test('secrets come from data, file and base64 the way qemu-img takes them', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  await runOk('qemu-img', ['create', '-q', '-f', 'luks', ...OBJ, '-o', 'key-secret=sec0,iter-time=10', 'f.luks', '1M'], { cwd: dir });
  await qemuIo(dir, luksOpts('f.luks'), ['write -P 7 0 4k']);
  await run('sh', ['-c', `printf '%s' '${PASS}' > pass.txt; printf '%s' '${PASS}' | base64 > pass.b64`], { cwd: dir });
  const b64 = (await readFile(join(dir, 'pass.b64'), 'utf8')).trim();
  for (const obj of ['secret,id=sec0,file=pass.txt', `secret,id=sec0,data=${b64},format=base64`, 'secret,id=sec0,file=pass.b64,format=base64']) {
    await assertSame(['compare', '--object', obj, '--image-opts', luksOpts('f.luks'), luksOpts('f.luks')], dir, obj);
  }
  await assertSame(['info', '--object', 'secret,id=sec0', 'f.luks'], dir);
});

test('create and convert write encrypted qcow2 and LUKS images qemu-img reads, checks clean and compares identical', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  await runOk('qemu-img', ['create', '-q', '-f', 'raw', 'src.raw', '12M'], { cwd: dir });
  await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x61 0 3M', '-c', 'write -P 0x62 5M 100k', '-c', 'write -P 0x63 11M 4097', 'src.raw'], { cwd: dir });
  const targets: Array<{ fmt: string; o: string; name: string; opts: (f: string) => string }> = [
    { fmt: 'qcow2', name: 'xts.qcow2', o: 'encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10', opts: qcowOpts },
    { fmt: 'qcow2', name: 'cbc.qcow2', o: 'encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10,encrypt.cipher-alg=aes-128,encrypt.cipher-mode=cbc,encrypt.ivgen-alg=essiv,encrypt.ivgen-hash-alg=sha256,encrypt.hash-alg=sha512,cluster_size=4k', opts: qcowOpts },
    { fmt: 'qcow2', name: 'v2.qcow2', o: 'encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10,compat=0.10,encrypt.ivgen-alg=plain', opts: qcowOpts },
    { fmt: 'luks', name: 'out.luks', o: 'key-secret=sec0,iter-time=10', opts: luksOpts },
    { fmt: 'luks', name: 'cbc.luks', o: 'key-secret=sec0,iter-time=10,cipher-alg=aes-128,cipher-mode=cbc,hash-alg=sha1', opts: luksOpts },
  ];
  for (const { fmt, o, name, opts } of targets) {
    // convert into a new encrypted image...
    const conv = await diskhub(['img', 'convert', ...OBJ, '-O', fmt, '-o', o, 'src.raw', name], { cwd: dir });
    assert.equal(conv.code, 0, `${name}: ${conv.stderr}`);
    if (fmt === 'qcow2') await runOk('qemu-img', ['check', ...OBJ, '--image-opts', opts(name)], { cwd: dir });
    const same = await run('qemu-img', ['compare', ...OBJ, '--image-opts', opts(name), 'driver=raw,file.filename=src.raw'], { cwd: dir });
    assert.equal(same.code, 0, `${name}: ${same.stdout}${same.stderr}`);
    // Settle delayed allocation first: "disk size" is the file's st_blocks.
    await run('sync', [name], { cwd: dir });
    await assertSame(['info', '--output=json', name], dir);
    await assertSame(['info', name], dir);
    // ...and create one that qemu-io writes into and qemu-img reads back.
    const created = `new-${name}`;
    const ours = await diskhub(['img', 'create', '-q', ...OBJ, '-f', fmt, '-o', o, created, '6M'], { cwd: dir });
    assert.equal(ours.code, 0, ours.stderr);
    await qemuIo(dir, opts(created), ['write -P 0x44 512 70000', 'write -P 0x45 2M 64k']);
    if (fmt === 'qcow2') await runOk('qemu-img', ['check', ...OBJ, '--image-opts', opts(created)], { cwd: dir });
    await runOk('qemu-img', ['convert', ...OBJ, '--image-opts', opts(created), '-O', 'raw', `${created}.q.raw`], { cwd: dir });
    const back = await diskhub(['img', 'convert', ...OBJ, '--image-opts', opts(created), '-O', 'raw', `${created}.d.raw`], { cwd: dir });
    assert.equal(back.code, 0, back.stderr);
    assert.ok((await readFile(join(dir, `${created}.d.raw`))).equals(await readFile(join(dir, `${created}.q.raw`))));
  }
  // convert -n into an existing encrypted image named with --target-image-opts.
  await runOk('qemu-img', ['create', '-q', '-f', 'qcow2', ...OBJ, '-o', 'encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10', 'pre.qcow2', '12M'], { cwd: dir });
  const n = await diskhub(['img', 'convert', '-n', ...OBJ, '--target-image-opts', 'src.raw', qcowOpts('pre.qcow2')], { cwd: dir });
  assert.equal(n.code, 0, n.stderr);
  assert.equal((await run('qemu-img', ['compare', ...OBJ, '--image-opts', qcowOpts('pre.qcow2'), 'driver=raw,file.filename=src.raw'], { cwd: dir })).code, 0);
});

test('create, measure and their errors with encryption options match qemu-img', needs('qemu-img'), async (t) => {
  const dir = await tempDir(t);
  await runOk('qemu-img', ['create', '-q', '-f', 'raw', 'src.raw', '3M'], { cwd: dir });
  for (const args of [
    ['measure', '-O', 'qcow2', '--size', '1G', '-o', 'encrypt.format=luks'],
    ['measure', ...OBJ, '-O', 'qcow2', '--size', '1G', '-o', 'encrypt.format=luks,encrypt.key-secret=sec0'],
    ['measure', ...OBJ, '-O', 'qcow2', '--size', '1G', '-o', 'encrypt.format=luks,encrypt.key-secret=sec0,encrypt.cipher-alg=aes-128,encrypt.cipher-mode=cbc'],
    ['measure', ...OBJ, '--output=json', '-O', 'qcow2', '-o', 'encrypt.format=luks,encrypt.key-secret=sec0,cluster_size=4k', 'src.raw'],
    ['measure', ...OBJ, '-O', 'luks', '--size', '1G', '-o', 'key-secret=sec0'],
    ['measure', ...OBJ, '-O', 'luks', '--size', '1G'],
    ['create', '-f', 'qcow2', '-o', 'encrypt.format=luks', 'x.qcow2', '1M'],
    ['create', '-f', 'qcow2', ...OBJ, '-o', 'encrypt.format=luks,encrypt.key-secret=sec0,encrypt.cipher-alg=foo', 'x.qcow2', '1M'],
    ['create', '-f', 'qcow2', ...OBJ, '-o', 'encrypt.format=luks,encrypt.key-secret=sec0,encrypt.hash-alg=md4', 'x.qcow2', '1M'],
    ['create', '-f', 'qcow2', ...OBJ, '-o', 'encrypt.format=luks,encrypt.key-secret=nosuch', 'x.qcow2', '1M'],
    ['create', '-f', 'luks', ...OBJ, 'x.luks', '1M'],
    ['create', '-f', 'luks', '-o', 'help'],
    ['convert', '-c', ...OBJ, '-O', 'qcow2', '-o', 'encrypt.format=luks,encrypt.key-secret=sec0', 'src.raw', 'never.qcow2'],
    ['convert', '-c', ...OBJ, '-O', 'luks', '-o', 'key-secret=sec0,iter-time=10', 'src.raw', 'never.luks'],
    ['create', '-f', 'qcow2', '-o', 'help'],
  ]) {
    // All three at once, so that a difference shows the whole story.
    const { ours, peer } = await both(args, dir);
    assert.deepEqual(ours, peer, args.join(' '));
  }
});

test('legacy encrypt.format=aes qcow2 images read as qemu-img reads them; writing them is refused', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  for (const [name, pass] of [['aes.qcow2', PASS], ['long.qcow2', 'a passphrase longer than sixteen bytes']] as const) {
    const obj = ['--object', `secret,id=sec0,data=${pass.replace(/,/g, ',,')}`];
    await runOk('qemu-img', ['create', '-q', '-f', 'qcow2', ...obj, '-o', 'encrypt.format=aes,encrypt.key-secret=sec0', name, '6M'], { cwd: dir });
    await runOk('qemu-io', [...obj, '--image-opts', qcowOpts(name), ...PATTERN.flatMap((c) => ['-c', c])], { cwd: dir });
    await runOk('qemu-img', ['convert', ...obj, '--image-opts', qcowOpts(name), '-O', 'raw', `${name}.q.raw`], { cwd: dir });
    const ours = await diskhub(['img', 'convert', ...obj, '--image-opts', qcowOpts(name), '-O', 'raw', `${name}.d.raw`], { cwd: dir });
    assert.equal(ours.code, 0, ours.stderr);
    assert.ok((await readFile(join(dir, `${name}.d.raw`))).equals(await readFile(join(dir, `${name}.q.raw`))), name);
    await assertSame(['info', '--output=json', name], dir);
    await assertSame(['map', '--output=json', ...obj, '--image-opts', qcowOpts(name)], dir);
    await assertSame(['convert', '-O', 'raw', name, 'never.raw'], dir);
  }
  const w = await diskhub(['img', 'convert', '-n', ...OBJ, '--target-image-opts', 'aes.qcow2.q.raw', qcowOpts('aes.qcow2')], { cwd: dir });
  assert.equal(w.code, 1);
  assert.match(w.stderr, /legacy AES encryption is not supported/);
});
