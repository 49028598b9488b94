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
import { assertSame } from './peer.js';

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
