/**
 * `diskhub img amend` on LUKS key slots, side by side with qemu-img 7.2 on copies of the same
 * images — qcow2 with encrypt.format=luks (`encrypt.state=…`) and raw luks (`state=…`): key
 * slots added (to a chosen or the first free slot), erased by index or by old password,
 * overwritten with --force, and every refusal (the last slot, an active slot, a missing or
 * unknown secret, a bad index, options that do not go together). After every step both tools
 * give the same message and exit code and the same slots are active; after a change the same
 * passphrases open both copies (qemu-io is the judge), the data reads back and qcow2 copies
 * check clean; a refusal leaves the file byte for byte as it was.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { needs, tempDir, qemuImg, run, diskhub } from '@diskhub/testkit';

const SECRETS = ['s0', 's1', 's2', 's3', 's4', 's5', 's6', 's7', 's8'];
const OBJECTS = SECRETS.flatMap((s) => ['--object', `secret,id=${s},data=pass-${s}`]);

interface Kind {
  name: string;
  create: string[];
  prefix: string;
  opts: (file: string, secret: string) => string;
}

const KINDS: Kind[] = [
  {
    name: 'qcow2', prefix: 'encrypt.',
    create: ['-f', 'qcow2', '-o', 'encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10'],
    opts: (file, secret) => `driver=qcow2,file.filename=${file},encrypt.key-secret=${secret}`,
  },
  {
    name: 'luks', prefix: '',
    create: ['-f', 'luks', '-o', 'key-secret=s0,iter-time=10'],
    opts: (file, secret) => `driver=luks,file.filename=${file},key-secret=${secret}`,
  },
];

/** Which secrets open the image, by qemu-io reading the pattern written before the amends. */
async function opensWith(kind: Kind, file: string): Promise<string[]> {
  const ok: string[] = [];
  for (const s of SECRETS) {
    const r = await run('qemu-io', [...OBJECTS, '--image-opts', kind.opts(file, s), '-c', 'read -P 0x5a 0 256k']);
    if (r.code === 0 && !/verification failed|can't open/.test(r.stdout + r.stderr)) ok.push(s);
  }
  return ok;
}

async function activeSlots(kind: Kind, file: string): Promise<boolean[]> {
  const info = JSON.parse((await run('qemu-img', ['info', '--output=json', file])).stdout) as { 'format-specific': { data: Record<string, unknown> } };
  const data = info['format-specific'].data;
  const luks = (kind.name === 'qcow2' ? data.encrypt : data) as { slots: { active: boolean }[] };
  return luks.slots.map((s) => s.active);
}

for (const kind of KINDS) {
  test(`amend ${kind.name}: LUKS key slots added and erased as qemu-img does`, needs('qemu-img', 'qemu-io'), async (t) => {
    const dir = await tempDir(t);
    const peer = join(dir, `peer.${kind.name}`), ours = join(dir, `ours.${kind.name}`);
    await qemuImg('create', ...OBJECTS, '-q', ...kind.create, peer, '4M');
    const w = await run('qemu-io', [...OBJECTS, '--image-opts', kind.opts(peer, 's0'), '-c', 'write -P 0x5a 0 256k']);
    assert.equal(w.code, 0, w.stderr);
    await copyFile(peer, ours);
    const p = kind.prefix;
    // [options, the secret the image is opened with, --force]
    const steps: Array<[string, string, boolean?]> = [
      [`${p}state=active,${p}new-secret=s1,${p}keyslot=4,${p}iter-time=10`, 's0'],
      [`${p}state=active,${p}new-secret=s2,${p}iter-time=10`, 's1'],
      [`${p}state=active,${p}new-secret=s3,${p}keyslot=4,${p}iter-time=10`, 's0'],
      [`${p}state=inactive,${p}keyslot=4`, 's0'],
      [`${p}state=inactive,${p}keyslot=4`, 's0'],
      [`${p}state=inactive,${p}old-secret=s0`, 's2'],
      [`${p}state=inactive,${p}old-secret=s9`, 's2'],
      [`${p}state=inactive,${p}old-secret=s0`, 's2'],
      [`${p}state=inactive,${p}keyslot=1,${p}old-secret=s3`, 's2'],
      [`${p}state=active,${p}new-secret=s3,${p}keyslot=1,${p}iter-time=10`, 's2'],
      [`${p}state=active,${p}new-secret=s3,${p}keyslot=1,${p}iter-time=10`, 's2', true],
      [`${p}state=inactive,${p}keyslot=1`, 's3'],
      [`${p}state=inactive,${p}old-secret=s3`, 's3'],
      [`${p}state=inactive`, 's3'],
      [`${p}new-secret=s4`, 's3'],
      [`${p}state=maybe`, 's3'],
      [`${p}state=active,${p}keyslot=8,${p}new-secret=s4`, 's3'],
      [`${p}state=active,${p}old-secret=s3,${p}new-secret=s4`, 's3'],
      [`${p}state=active`, 's3'],
      [`${p}state=inactive,${p}keyslot=2,${p}new-secret=s4`, 's3'],
      [`${p}state=inactive,${p}keyslot=2,${p}iter-time=5`, 's3'],
      [`${p}state=active,${p}new-secret=s1,${p}iter-time=10`, 's3'],
      // All eight slots in use (once: each add costs both tools a PBKDF2 timing run).
      ...(kind.name === 'luks' ? [4, 5, 6, 7, 8, 8].map((n): [string, string] => [`${p}state=active,${p}new-secret=s${n},${p}iter-time=10`, 's3']) : []),
      [`${p}state=inactive,${p}old-secret=s1`, 's3'],
      [`${p}state=inactive,${p}keyslot=0`, 's3'],
      [`${p}state=active,${p}new-secret=s2,${p}iter-time=10`, 's1'],
    ];
    for (const [o, key, force] of steps) {
      const what = `${kind.name}: amend${force ? ' --force' : ''} -o ${o} (opened with ${key})`;
      const args = (file: string) => ['amend', ...OBJECTS, ...(force ? ['--force'] : []), '--image-opts', '-o', o, kind.opts(file, key)];
      const before = await readFile(ours);
      const pr = await run('qemu-img', args(peer));
      const dr = await diskhub(['img', ...args(ours)]);
      assert.equal(dr.code, pr.code, `${what}: ${dr.stderr} / ${pr.stderr}`);
      assert.equal(dr.stderr.replaceAll(ours, peer), pr.stderr, what);
      assert.deepEqual(await activeSlots(kind, ours), await activeSlots(kind, peer), `active slots after ${what}`);
      if (dr.code !== 0) {
        // A refusal writes nothing.
        assert.ok((await readFile(ours)).equals(before), `${what}: refused, but the image changed`);
        continue;
      }
      const opens = await opensWith(kind, ours);
      assert.deepEqual(opens, await opensWith(kind, peer), `passphrases after ${what}`);
      assert.ok(opens.length > 0, `${what}: some passphrase still opens the image`);
      if (kind.name === 'qcow2') {
        const c = await run('qemu-img', ['check', ...OBJECTS, '--image-opts', kind.opts(ours, opens[0]!)]);
        assert.equal(c.code, 0, `check after ${what}: ${c.stdout}${c.stderr}`);
      }
    }
  });
}

test('amend: encrypt.* on an image without encryption, and luks amend options in -o help, as qemu-img', needs('qemu-img'), async (t) => {
  const dir = await tempDir(t);
  await qemuImg('create', '-q', '-f', 'qcow2', join(dir, 'plain.qcow2'), '1M');
  for (const args of [
    ['amend', ...OBJECTS, '-o', 'encrypt.state=active,encrypt.new-secret=s1', 'plain.qcow2'],
    ['amend', '-f', 'luks', '-o', 'help'],
    ['amend', '-f', 'qcow2', '-o', 'help'],
  ]) {
    const d = await diskhub(['img', ...args], { cwd: dir });
    const q = await run('qemu-img', args, { cwd: dir });
    assert.equal(d.code, q.code, args.join(' '));
    assert.equal(d.stdout, q.stdout, args.join(' '));
    assert.equal(d.stderr, q.stderr, args.join(' '));
  }
});
