/** convert and compare, checked with the real qemu-img compare / check. */
import test from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, open, readdir, readFile, writeFile, stat } from 'node:fs/promises';
import { createReadStream } from 'node:fs';
import { join } from 'node:path';
import { needs, tempDir, qemuImg, qemuIo, diskhub, diskhubBin, run } from '@diskhub/testkit';
import { assertSame } from './peer.js';

/** A raw image with data runs, zero runs inside data, and holes. */
async function makeRaw(path: string, size: number, pieces: [number, number, number][]): Promise<void> {
  await qemuImg('create', '-f', 'raw', path, String(size));
  const args = pieces.flatMap(([pattern, off, len]) => ['-c', `write -P ${pattern} ${off} ${len}`]);
  if (args.length > 0) await qemuIo('-f', 'raw', ...args, path);
}

const sha = (path: string) => new Promise<string>((resolve, reject) => {
  const h = createHash('sha256');
  createReadStream(path).on('data', (d) => h.update(d)).on('end', () => resolve(h.digest('hex'))).on('error', reject);
});

test('img convert raw→raw: identical content (qemu-img compare), holes kept, all options', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  const src = join(dir, 'src.raw');
  await makeRaw(src, 64 << 20, [[1, 1 << 20, 4 << 20], [0, 2 << 20, 256 << 10], [2, 20 << 20, 10 << 20], [3, (64 << 20) - 512, 512]]);
  const variants: string[][] = [[], ['-p'], ['-q'], ['-S', '0'], ['-S', '64k'], ['-m', '1'], ['-m', '16', '-W'], ['-t', 'none', '-T', 'none'], ['-f', 'raw', '-O', 'raw']];
  for (const [i, v] of variants.entries()) {
    const out = join(dir, `out${i}.raw`);
    const r = await diskhub(['img', 'convert', ...v, src, out]);
    assert.equal(r.code, 0, `${v.join(' ')}: ${r.stderr}`);
    assert.equal(r.stderr, '');
    if (v.includes('-p')) assert.match(r.stdout, /^ {4}\(0\.00\/100%\)\r.*\(100\.00\/100%\)\r\n$/s);
    else assert.equal(r.stdout, '');
    assert.equal((await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', src, out])).code, 0, v.join(' '));
    const st = await stat(out);
    assert.equal(st.size, 64 << 20);
    if (v[0] === '-S' && v[1] === '0') assert.ok(st.blocks * 512 >= 64 << 20, 'fully allocated with -S 0');
    else assert.ok(st.blocks * 512 < 20 << 20, `sparse output (${st.blocks * 512} bytes allocated) for ${v.join(' ')}`);
  }
  // Nothing left behind but the outputs.
  assert.deepEqual((await readdir(dir)).filter((f) => f.startsWith('.')), []);
});

test('img convert: several sources are concatenated, -n writes into an existing target', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  await makeRaw(join(dir, 'a.raw'), 1 << 20, [[5, 0, 4096]]);
  await makeRaw(join(dir, 'b.raw'), 3 << 19, [[6, 4096, 8192]]);
  const r = await diskhub(['img', 'convert', 'a.raw', 'b.raw', 'cat.raw'], { cwd: dir });
  assert.equal(r.code, 0, r.stderr);
  await qemuImg('convert', '-f', 'raw', '-O', 'raw', join(dir, 'a.raw'), join(dir, 'b.raw'), join(dir, 'peer.raw'));
  assert.equal((await run('qemu-img', ['compare', join(dir, 'cat.raw'), join(dir, 'peer.raw')])).code, 0);
  // -n into a target full of garbage: zero ranges must be written, not skipped.
  await writeFile(join(dir, 'dirty.raw'), Buffer.alloc(5 << 19, 0xee));
  const n = await diskhub(['img', 'convert', '-n', 'a.raw', 'b.raw', 'dirty.raw'], { cwd: dir });
  assert.equal(n.code, 0, n.stderr);
  assert.equal((await run('qemu-img', ['compare', join(dir, 'cat.raw'), join(dir, 'dirty.raw')])).code, 0);
  // --target-is-zero trusts the caller: ranges that are zero in the source stay untouched.
  await writeFile(join(dir, 'dirty2.raw'), Buffer.alloc(5 << 19, 0xee));
  await assertSame(['convert', '-n', '--target-is-zero', 'a.raw', 'b.raw', 'dirty2.raw'], dir);
});

test('img compare: same verdicts, offsets and exit codes as qemu-img', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  await makeRaw(join(dir, 'a.raw'), 8 << 20, [[1, 1 << 20, 1 << 20]]);
  await makeRaw(join(dir, 'b.raw'), 8 << 20, [[1, 1 << 20, 1 << 20], [3, 2000000, 1]]);
  await makeRaw(join(dir, 'same.raw'), 8 << 20, [[1, 1 << 20, 1 << 20]]);
  await makeRaw(join(dir, 'longer0.raw'), 9 << 20, [[1, 1 << 20, 1 << 20]]);
  await makeRaw(join(dir, 'longer1.raw'), 9 << 20, [[1, 1 << 20, 1 << 20], [5, (8 << 20) + 4096, 100]]);
  await makeRaw(join(dir, 'zeros.raw'), 8 << 20, [[0, 1 << 20, 1 << 20]]);
  await makeRaw(join(dir, 'empty.raw'), 8 << 20, []);
  const pairs = [['a.raw', 'b.raw'], ['a.raw', 'same.raw'], ['a.raw', 'longer0.raw'], ['longer0.raw', 'a.raw'], ['a.raw', 'longer1.raw'],
    ['zeros.raw', 'empty.raw'], ['empty.raw', 'a.raw']];
  for (const [x, y] of pairs) {
    for (const flags of [[], ['-q'], ['-f', 'raw', '-F', 'raw']]) await assertSame(['compare', ...flags, x!, y!], dir);
  }
  // Strict mode compares allocation too; these pairs differ in size or in content first.
  for (const [x, y] of [['a.raw', 'longer0.raw'], ['longer1.raw', 'a.raw']]) await assertSame(['compare', '-s', x!, y!], dir);
  // Many short data runs (reads run ahead across them): the first difference is the one
  // reported, before a later difference in content or (with -s) in allocation.
  const runs = Array.from({ length: 32 }, (_, i): [number, number, number] => [1 + (i % 7), i * (256 << 10), 64 << 10]);
  await makeRaw(join(dir, 'runs.raw'), 8 << 20, runs);
  await makeRaw(join(dir, 'runs-diff.raw'), 8 << 20, [...runs, [9, 20 * (256 << 10) + 5000, 10], [9, 27 * (256 << 10) + 700, 10]]);
  await makeRaw(join(dir, 'runs-alloc.raw'), 8 << 20, [...runs.filter((_, i) => i !== 25), [9, 20 * (256 << 10) + 5000, 10]]);
  await makeRaw(join(dir, 'runs-hole.raw'), 8 << 20, runs.filter((_, i) => i !== 25));
  for (const [x, y] of [['runs.raw', 'runs-diff.raw'], ['runs.raw', 'runs-alloc.raw'], ['runs-alloc.raw', 'runs.raw'], ['runs.raw', 'runs-hole.raw'], ['runs-hole.raw', 'runs.raw'], ['runs.raw', 'runs.raw']]) {
    for (const flags of [[], ['-s']]) await assertSame(['compare', ...flags, x!, y!], dir);
  }
});

test('img convert: SIGINT / SIGTERM mid-way leave no destination file and an unchanged source', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  const src = join(dir, 'big.raw');
  // Sparse but data-heavy: 1 MiB of data in every 4 MiB of a 1 GiB image.
  await qemuImg('create', '-f', 'raw', src, '1G');
  const fh = await open(src, 'r+');
  const chunk = Buffer.alloc(1 << 20);
  for (let off = 0; off < 1 << 30; off += 4 << 20) {
    chunk.fill((off >> 20) & 0xff || 1);
    await fh.write(chunk, 0, chunk.length, off);
  }
  await fh.close();
  const before = await sha(src);
  const srcStat = await stat(src);
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    const out = join(dir, `out-${sig}.raw`);
    const child = spawn(process.execPath, [diskhubBin, 'img', 'convert', '-p', '-m', '1', '-S', '0', src, out], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    await new Promise<void>((resolve) => {
      child.stdout.on('data', (d: Buffer) => {
        stdout += d.toString();
        // Interrupt once a few percent are done: the temporary file exists and holds data.
        if (/\((?:[3-9]|\d\d)\.\d\d\/100%\)/.test(stdout)) resolve();
      });
      child.on('exit', () => resolve());
    });
    const tmp = (await readdir(dir)).filter((f) => f.includes('diskhub-tmp'));
    child.kill(sig);
    const code = await exited;
    assert.equal(code, sig === 'SIGINT' ? 130 : 143, `exit code after ${sig} (output: ${stdout.slice(-40)})`);
    assert.equal(tmp.length, 1, 'a temporary file was being written');
    const left = (await readdir(dir)).filter((f) => f !== 'big.raw');
    assert.deepEqual(left, [], `nothing left after ${sig}`);
  }
  // Interrupted while the target is still being created (full preallocation of 1 GiB).
  const out = join(dir, 'prealloc.raw');
  const child = spawn(process.execPath, [diskhubBin, 'img', 'convert', '-o', 'preallocation=full', src, out], { stdio: 'ignore' });
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  for (let i = 0; i < 200 && !(await readdir(dir)).some((f) => f.includes('diskhub-tmp')); i++) await new Promise((r) => setTimeout(r, 10));
  child.kill('SIGINT');
  assert.equal(await exited, 130);
  assert.deepEqual((await readdir(dir)).filter((f) => f !== 'big.raw'), [], 'nothing left after SIGINT during creation');
  assert.equal(await sha(src), before, 'source unchanged');
  assert.equal((await stat(src)).mtimeMs, srcStat.mtimeMs);
});

test('img convert: the target is written one write at a time, in order, by one thread, each large write reserved first (fallocate KEEP_SIZE of exactly its range, seen by strace); qcow2 and raw outputs pass qemu-img check / compare', needs('qemu-img', 'qemu-io', 'strace'), async (t) => {
  const dir = await tempDir(t);
  const src = join(dir, 'src.raw');
  await makeRaw(src, 48 << 20, [[7, 0, 6 << 20], [0, 2 << 20, 1 << 20], [9, 20 << 20, 3 << 20]]);
  for (const fmt of ['qcow2', 'raw']) {
    const out = join(dir, `out.${fmt}`);
    // One log per thread (-ff): each file is one thread's calls, in the order it made them.
    const logs = join(dir, `strace-${fmt}`);
    await mkdir(logs);
    const r = await run('strace', ['-ff', '-qq', '-e', 'trace=fallocate,pwrite64,pwritev', '-o', join(logs, 't'), process.execPath, diskhubBin, 'img', 'convert', '-O', fmt, src, out]);
    assert.equal(r.code, 0, r.stderr);
    if (fmt === 'qcow2') await qemuImg('check', out);
    await qemuImg('compare', '-q', src, out);
    const threads = await Promise.all((await readdir(logs)).map(async (f) => (await readFile(join(logs, f), 'utf8')).split('\n')));
    const writers = threads.filter((lines) => lines.some((l) => { const w = /pwrite(?:64|v)\(\d+, .*, \d+\) = (\d+)$/.exec(l); return !!w && Number(w[1]) >= 256 << 10; }));
    assert.equal(writers.length, 1, `${fmt}: the large writes come from ${writers.length} threads, not one`);
    // In that thread: each large write directly after the reservation of its own fd and range,
    // at increasing offsets (the target is filled in guest order, as qemu-img fills it).
    const lines = writers[0]!;
    let large = 0;
    let last = -1;
    lines.forEach((line, i) => {
      const w = /pwrite(?:64|v)\((\d+), .*, (\d+)\) = (\d+)$/.exec(line);
      if (!w || Number(w[3]) < 256 << 10) return;
      large++;
      const f = /fallocate\((\d+), FALLOC_FL_KEEP_SIZE, (\d+), (\d+)\) = 0/.exec(lines[i - 1] ?? '');
      assert.ok(f && f[1] === w[1] && f[2] === w[2] && f[3] === w[3], `${fmt}: a ${w[3]}-byte write at ${w[2]} without its reservation just before: ${(lines[i - 1] ?? '').slice(0, 100)}…`);
      assert.ok(Number(w[2]) > last, `${fmt}: a large write at ${w[2]} after one at ${last}`);
      last = Number(w[2]);
    });
    assert.ok(large >= 2, `${fmt}: ${large} large writes`);
  }
});
