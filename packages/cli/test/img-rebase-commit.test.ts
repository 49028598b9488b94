/**
 * `diskhub img rebase` and `commit` side by side with qemu-img 7.2 on copies of the same
 * 3-image chains: the results compare identical (qemu-img compare) to what qemu-img makes of
 * the same inputs, every image passes qemu-img check, messages and exit codes are qemu-img's,
 * and a kill -9 in the middle leaves images that check -r all repairs with no data lost.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { copyFile, mkdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { needs, tempDir, qemuImg, qemuIo, run, diskhub, diskhubBin } from '@diskhub/testkit';
import { assertSame } from './peer.js';

const CHAIN = ['base', 'mid', 'top'] as const;

/**
 * base (qcow2, 64 KiB clusters) ← mid (4 KiB clusters) ← top (qcow2 v2, 16 KiB clusters), with
 * writes that overlap, are not cluster-aligned and zero out data.
 */
async function makeChain(dir: string): Promise<void> {
  const at = (f: string) => join(dir, f);
  await qemuImg('create', '-q', '-f', 'qcow2', at('base.qcow2'), '8M');
  await qemuIo('-c', 'write -P 1 0 3M', '-c', 'write -P 7 4M 1M', at('base.qcow2'));
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4k', '-b', 'base.qcow2', '-F', 'qcow2', 'mid.qcow2', '8M'], { cwd: dir });
  await qemuIo('-c', 'write -P 2 1000448 1M', '-c', 'write -z 4M 64k', '-c', 'write -P 1 6M 512', '-c', 'write -P 5 7M 4k', at('mid.qcow2'));
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=16k,compat=0.10', '-b', 'mid.qcow2', '-F', 'qcow2', 'top.qcow2', '8M'], { cwd: dir });
  await qemuIo('-c', 'write -P 3 2M 100k', '-c', 'write -z 512 1024', '-c', 'write -P 4 7340032 2048', at('top.qcow2'));
}

/** The same chain twice: `q/` for qemu-img, `d/` for diskhub, and `orig/` untouched. */
async function twoChains(t: Parameters<typeof tempDir>[0]): Promise<string> {
  const dir = await tempDir(t);
  await mkdir(join(dir, 'orig'));
  await makeChain(join(dir, 'orig'));
  for (const side of ['q', 'd']) {
    await mkdir(join(dir, side));
    for (const f of CHAIN) await copyFile(join(dir, 'orig', `${f}.qcow2`), join(dir, side, `${f}.qcow2`));
  }
  return dir;
}

async function assertSameResults(dir: string, what: string): Promise<void> {
  for (const f of CHAIN) {
    const cmp = await run('qemu-img', ['compare', join(dir, 'q', `${f}.qcow2`), join(dir, 'd', `${f}.qcow2`)]);
    assert.equal(cmp.code, 0, `${what}: ${f} differs from qemu-img's: ${cmp.stdout}${cmp.stderr}`);
    const check = await run('qemu-img', ['check', join(dir, 'd', `${f}.qcow2`)]);
    assert.equal(check.code, 0, `${what}: check ${f}: ${check.stdout}${check.stderr}`);
  }
  const backing = async (side: string) => (await qemuImg('info', '--output=json', join(dir, side, 'top.qcow2')))
    .split('\n').filter((l) => l.includes('backing-filename') && !l.includes('full-backing')).join('\n');
  assert.equal(await backing('d'), await backing('q'), `${what}: backing file of top`);
}

/** Run the same command line in q/ and d/; same output and exit code. */
async function both(dir: string, args: string[]): Promise<void> {
  const peer = await run('qemu-img', args, { cwd: join(dir, 'q') });
  const ours = await diskhub(['img', ...args], { cwd: join(dir, 'd') });
  assert.equal(ours.stdout, peer.stdout, `stdout of ${args.join(' ')}`);
  assert.equal(ours.stderr, peer.stderr, `stderr of ${args.join(' ')}`);
  assert.equal(ours.code, peer.code, `exit code of ${args.join(' ')}: ${ours.stderr}`);
}

test('rebase: safe onto an image of the chain, a new file, nothing; unsafe; as qemu-img', needs('qemu-img', 'qemu-io'), async (t) => {
  const cases: [string, string[], (dir: string) => Promise<void>][] = [
    ['onto base (in the chain)', ['rebase', '-b', 'base.qcow2', '-F', 'qcow2', 'top.qcow2'], async () => {}],
    ['flatten', ['rebase', '-b', '', 'top.qcow2'], async () => {}],
    ['onto a new raw file', ['rebase', '-b', 'other.raw', '-F', 'raw', 'top.qcow2'], async (dir) => {
      for (const side of ['q', 'd']) {
        await qemuImg('create', '-q', '-f', 'raw', join(dir, side, 'other.raw'), '5M');
        await qemuIo('-f', 'raw', '-c', 'write -P 1 0 1M', '-c', 'write -P 9 1536k 2M', join(dir, side, 'other.raw'));
      }
    }],
    ['onto a new qcow2 chain, quiet, cache modes', ['rebase', '-q', '-t', 'none', '-T', 'unsafe', '-b', 'new.qcow2', '-F', 'qcow2', 'top.qcow2'], async (dir) => {
      for (const side of ['q', 'd']) {
        await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', 'new.qcow2', '7M'], { cwd: join(dir, side) });
        await qemuIo('-c', 'write -P 1 1M 1M', '-c', 'write -P 8 0 4k', join(dir, side, 'new.qcow2'));
      }
    }],
    ['unsafe', ['rebase', '-u', '-b', '../orig/base.qcow2', '-F', 'qcow2', 'top.qcow2'], async () => {}],
    ['unsafe, no backing', ['rebase', '-u', 'top.qcow2'], async () => {}],
  ];
  for (const [what, args, prepare] of cases) {
    const dir = await twoChains(t);
    await prepare(dir);
    await both(dir, args);
    await assertSameResults(dir, what);
    if (!args.includes('-u')) {
      const same = await run('qemu-img', ['compare', join(dir, 'orig', 'top.qcow2'), join(dir, 'd', 'top.qcow2')]);
      assert.equal(same.code, 0, `${what}: the overlay's content changed: ${same.stdout}`);
    }
  }
});

test('rebase: a relative backing name resolves against the overlay, from another directory', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await twoChains(t);
  for (const side of ['q', 'd']) {
    await mkdir(join(dir, side, 'sub'));
    await qemuImg('create', '-q', '-f', 'qcow2', join(dir, side, 'sub', 'n.qcow2'), '8M');
    await qemuIo('-c', 'write -P 6 0 8M', join(dir, side, 'sub', 'n.qcow2'));
  }
  // From the parent: "sub/n.qcow2" is found next to the overlay, and stored as given.
  const peer = await run('qemu-img', ['rebase', '-b', 'sub/n.qcow2', '-F', 'qcow2', 'q/top.qcow2'], { cwd: dir });
  const ours = await diskhub(['img', 'rebase', '-b', 'sub/n.qcow2', '-F', 'qcow2', 'd/top.qcow2'], { cwd: dir });
  assert.equal(ours.code, peer.code, ours.stderr);
  assert.equal(ours.stderr, peer.stderr);
  await assertSameResults(dir, 'relative');
  const same = await run('qemu-img', ['compare', join(dir, 'orig', 'top.qcow2'), join(dir, 'd', 'top.qcow2')]);
  assert.equal(same.code, 0, same.stdout);
});

test('rebase and commit refuse what qemu-img refuses, with its messages', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await twoChains(t);
  for (const side of ['q', 'd']) {
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'top.qcow2', '-F', 'qcow2', 'above.qcow2'], { cwd: join(dir, side) });
  }
  for (const args of [
    ['rebase', 'top.qcow2'],
    ['rebase', '-b', 'x', 'a', 'b'],
    ['rebase', '-b', 'base.qcow2', '-F', 'nosuchformat', 'top.qcow2'],
    ['rebase', '-b', 'missing.qcow2', '-F', 'qcow2', 'top.qcow2'],
    ['rebase', '-b', 'missing.qcow2', 'top.qcow2'],
    ['rebase', '-u', '-b', 'base.qcow2', 'top.qcow2'],
    ['rebase', '-t', 'bogus', '-b', 'base.qcow2', 'top.qcow2'],
    ['rebase', '-b', 'base.qcow2', '-F', 'qcow2', 'nothere.qcow2'],
    // A loop: the overlay as its own backing file, or under an image backed by it.
    ['rebase', '-b', 'top.qcow2', '-F', 'qcow2', 'top.qcow2'],
    ['rebase', '-b', 'above.qcow2', '-F', 'qcow2', 'top.qcow2'],
    ['rebase', '-b', '.', '-F', 'raw', 'top.qcow2'],
    ['commit', 'base.qcow2'],
    ['commit', '-b', 'nothere', 'top.qcow2'],
    ['commit', '-r', '1x', 'top.qcow2'],
    ['commit', '-t', 'bogus', 'top.qcow2'],
    ['commit'],
    ['commit', 'nothere.qcow2'],
  ]) {
    await both(dir, args);
  }
  await assertSameResults(dir, 'after refusals');
});

test('commit: into the backing file, -d, -b further down the chain, as qemu-img', needs('qemu-img', 'qemu-io'), async (t) => {
  for (const args of [['commit', 'top.qcow2'], ['commit', '-d', 'top.qcow2'], ['commit', '-b', 'base.qcow2', 'top.qcow2'], ['commit', '-q', 'mid.qcow2'], ['commit', '-r', '64M', '-t', 'unsafe', 'top.qcow2']]) {
    const dir = await twoChains(t);
    await both(dir, args);
    await assertSameResults(dir, args.join(' '));
    const same = await run('qemu-img', ['compare', join(dir, 'orig', 'top.qcow2'), join(dir, 'd', 'top.qcow2')]);
    assert.equal(same.code, 0, `${args.join(' ')}: the top's content changed: ${same.stdout}`);
  }
});

test('commit into a smaller base grows it first, as qemu-img (qcow2 and raw bases, over an intermediate image)', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  for (const fmt of ['qcow2', 'raw']) {
    for (const side of ['q', 'd']) {
      const cwd = join(dir, `${fmt}-${side}`);
      await mkdir(cwd);
      await run('qemu-img', ['create', '-q', '-f', fmt, `base.${fmt}`, '1M'], { cwd });
      await qemuIo('-f', fmt, '-c', 'write -P 1 0 1M', join(cwd, `base.${fmt}`));
      await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', `base.${fmt}`, '-F', fmt, 'mid.qcow2', '2M'], { cwd });
      await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'mid.qcow2', '-F', 'qcow2', 'top.qcow2', '5M'], { cwd });
      await qemuIo('-c', 'write -P 2 512k 1M', '-c', 'write -P 3 4M 64k', join(cwd, 'top.qcow2'));
    }
    const q = join(dir, `${fmt}-q`), d = join(dir, `${fmt}-d`);
    const peer = await run('qemu-img', ['commit', '-b', `base.${fmt}`, 'top.qcow2'], { cwd: q });
    const ours = await diskhub(['img', 'commit', '-b', `base.${fmt}`, 'top.qcow2'], { cwd: d });
    assert.equal(ours.code, peer.code, `${fmt}: ${ours.stderr} / ${peer.stderr}`);
    assert.equal(ours.stdout, peer.stdout, fmt);
    assert.equal(ours.stderr, peer.stderr, fmt);
    const cmp = await run('qemu-img', ['compare', '-f', fmt, '-F', fmt, join(q, `base.${fmt}`), join(d, `base.${fmt}`)]);
    assert.equal(cmp.code, 0, `${fmt}: base differs from qemu-img's: ${cmp.stdout}`);
    const info = async (side: string) => JSON.parse(await qemuImg('info', '-f', fmt, '--output=json', join(dir, `${fmt}-${side}`, `base.${fmt}`))) as { 'virtual-size': number };
    assert.equal((await info('d'))['virtual-size'], (await info('q'))['virtual-size'], `${fmt}: base size`);
    if (fmt === 'qcow2') assert.equal((await run('qemu-img', ['check', join(d, 'base.qcow2')])).code, 0, 'base checks clean');
  }
});

test('commit -r: the rate limit holds', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  await qemuImg('create', '-q', '-f', 'qcow2', join(dir, 'b.qcow2'), '16M');
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'b.qcow2', '-F', 'qcow2', 't.qcow2'], { cwd: dir });
  await qemuIo('-c', 'write -P 3 0 12M', join(dir, 't.qcow2'));
  const started = performance.now();
  const r = await diskhub(['img', 'commit', '-r', '8M', 't.qcow2'], { cwd: dir });
  const seconds = (performance.now() - started) / 1000;
  assert.equal(r.code, 0, r.stderr);
  // 12 MiB at 8 MiB/s: the first 2 MiB chunk goes at once, the other 10 MiB take 1.25 s.
  assert.ok(seconds >= 1.2, `12 MiB at 8 MiB/s took only ${seconds} s`);
});

/** Start a diskhub img command, kill -9 it after `ms`; resolves when it has died. */
async function killAfter(args: string[], cwd: string, ms: number): Promise<void> {
  const child = spawn(process.execPath, [diskhubBin, 'img', ...args], { cwd, stdio: 'ignore' });
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  setTimeout(() => child.kill('SIGKILL'), ms);
  await exited;
}

test('kill -9 during commit and rebase: check -r all repairs, nothing committed is lost', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  const at = (f: string) => join(dir, f);
  await qemuImg('create', '-q', '-f', 'qcow2', at('b.qcow2'), '64M');
  await qemuIo('-c', 'write -P 1 0 64M', at('b.qcow2'));
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4k', '-b', 'b.qcow2', '-F', 'qcow2', 't.qcow2'], { cwd: dir });
  await qemuIo('-c', 'write -P 2 0 40M', '-c', 'write -P 3 50M 1M', at('t.qcow2'));
  await qemuImg('convert', '-O', 'raw', at('t.qcow2'), at('expected.raw'));
  // Commit at 16 MiB/s: killed a second in, with part of the data in the base.
  await killAfter(['commit', '-r', '16M', 't.qcow2'], dir, 1000);
  for (const f of ['b.qcow2', 't.qcow2']) {
    const r = await run('qemu-img', ['check', '-r', 'all', at(f)]);
    assert.ok(r.code === 0, `check -r all ${f}: ${r.stdout}${r.stderr}`);
  }
  let cmp = await run('qemu-img', ['compare', at('expected.raw'), at('t.qcow2')]);
  assert.equal(cmp.code, 0, `after an interrupted commit: ${cmp.stdout}`);
  // The interrupted commit can be run again to the end.
  const again = await diskhub(['img', 'commit', 't.qcow2'], { cwd: dir });
  assert.equal(again.code, 0, again.stderr);
  cmp = await run('qemu-img', ['compare', at('expected.raw'), at('t.qcow2')]);
  assert.equal(cmp.code, 0, cmp.stdout);
  // The emptied overlay gives the space of its 41 MiB of data back to the filesystem.
  const { blocks } = await stat(at('t.qcow2'));
  assert.ok(blocks * 512 < 4 << 20, `the committed overlay still takes ${blocks * 512} bytes`);
  assert.equal((await run('qemu-img', ['check', at('t.qcow2')])).code, 0);

  // Rebase (flatten) killed at several points: the overlay reads as before each time.
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4k', '-b', 'b.qcow2', '-F', 'qcow2', 'r.qcow2'], { cwd: dir });
  await qemuIo('-c', 'write -P 4 8M 1M', at('r.qcow2'));
  await qemuImg('convert', '-O', 'raw', at('r.qcow2'), at('expected-r.raw'));
  for (const ms of [150, 300, 600]) {
    await killAfter(['rebase', '-b', '', 'r.qcow2'], dir, ms);
    const r = await run('qemu-img', ['check', '-r', 'all', at('r.qcow2')]);
    assert.equal(r.code, 0, `check -r all after ${ms} ms: ${r.stdout}${r.stderr}`);
    cmp = await run('qemu-img', ['compare', at('expected-r.raw'), at('r.qcow2')]);
    assert.equal(cmp.code, 0, `rebase killed after ${ms} ms: ${cmp.stdout}`);
  }
});

test('rebase of a qed overlay, safe and unsafe, as qemu-img', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  for (const side of ['q', 'd']) {
    const at = (f: string) => join(dir, side, f);
    await mkdir(join(dir, side));
    await qemuImg('create', '-q', '-f', 'raw', at('base.raw'), '4M');
    await qemuIo('-f', 'raw', '-c', 'write -P 1 0 3M', at('base.raw'));
    await qemuImg('create', '-q', '-f', 'raw', at('other.raw'), '4M');
    await qemuIo('-f', 'raw', '-c', 'write -P 1 1M 1M', at('other.raw'));
    await run('qemu-img', ['create', '-q', '-f', 'qed', '-o', 'cluster_size=4k', '-b', 'base.raw', '-F', 'raw', 'o.qed', '4M'], { cwd: join(dir, side) });
    await qemuIo('-f', 'qed', '-c', 'write -P 2 100k 8k', at('o.qed'));
    await copyFile(at('o.qed'), at('u.qed'));
    await copyFile(at('o.qed'), at('f.qed'));
  }
  await copyFile(join(dir, 'q', 'o.qed'), join(dir, 'expected.qed'));
  await copyFile(join(dir, 'q', 'base.raw'), join(dir, 'base.raw'));
  for (const args of [
    ['rebase', '-f', 'qed', '-b', 'other.raw', '-F', 'raw', 'o.qed'],
    ['rebase', '-f', 'qed', '-b', '', 'f.qed'],
    ['rebase', '-u', '-b', 'other.raw', '-F', 'raw', 'u.qed'],
  ]) {
    await both(dir, args);
    const f = args[args.length - 1]!;
    const cmp = await run('qemu-img', ['compare', join(dir, 'q', f), join(dir, 'd', f)]);
    assert.equal(cmp.code, 0, `${args.join(' ')}: ${cmp.stdout}`);
    assert.equal(await qemuImg('info', join(dir, 'd', f)).then((s) => s.replace(/^(image|disk size): .*\n/gm, '').replace(/actual path: .*\//, '')),
      await qemuImg('info', join(dir, 'q', f)).then((s) => s.replace(/^(image|disk size): .*\n/gm, '').replace(/actual path: .*\//, '')));
    assert.equal((await run('qemu-img', ['check', join(dir, 'd', f)])).code, 0);
    if (!args.includes('-u')) assert.equal((await run('qemu-img', ['compare', join(dir, 'expected.qed'), join(dir, 'd', f)])).code, 0);
  }
});
