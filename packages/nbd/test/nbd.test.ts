/**
 * `diskhub nbd` against the real NBD clients: nbdinfo (sizes, flags, contexts, allocation
 * map), nbdcopy and qemu-img over nbd:// (byte-exact copies), qemu-io writing through the
 * server, partitions of an MBR disk, several clients at once, unix sockets, and a raw-socket
 * client that breaks the protocol in every way we could think of.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { connect } from 'node:net';
import { mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { diskhubBin, needs, qemuImg, qemuIo, run, runOk, tempDir } from '@diskhub/testkit';

let nextPort = 20000 + (process.pid % 5000) * 4;

interface Served { url: string; port: number; proc: ChildProcess; stop(): Promise<number | null>; stderr(): string }

/** Start `diskhub nbd -v ARGS` and wait until it listens. */
async function serve(t: { after(fn: () => unknown): void }, args: string[], opts: { socket?: string } = {}): Promise<Served> {
  const port = nextPort++;
  const proc = spawn(process.execPath, [diskhubBin, 'nbd', '-v', ...(opts.socket ? ['-k', opts.socket] : ['-p', String(port)]), ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  await new Promise<void>((resolve, reject) => {
    proc.stderr!.on('data', (d) => { err += d; if (/serving/.test(err)) resolve(); });
    proc.on('exit', (code) => reject(new Error(`diskhub nbd exited ${code}: ${err}`)));
  });
  const exited = new Promise<number | null>((resolve) => proc.on('exit', (code) => resolve(code)));
  const stop = async () => { if (proc.exitCode === null) proc.kill('SIGTERM'); return exited; };
  t.after(stop);
  const url = opts.socket ? `nbd+unix:///?socket=${opts.socket}` : `nbd://127.0.0.1:${port}`;
  return { url, port, proc, stop, stderr: () => err };
}

async function sample(dir: string): Promise<string> {
  const p = join(dir, 'disk.qcow2');
  await qemuImg('create', '-q', '-f', 'qcow2', p, '64M');
  await qemuIo('-f', 'qcow2', '-c', 'write -P 0x61 1M 2M', '-c', 'write -z 10M 1M', '-c', 'write -P 0x62 40M 64k', p);
  return p;
}

test('nbd: nbdinfo sees the export, its flags, block sizes and metadata contexts', needs('qemu-img', 'qemu-io', 'nbdinfo'), async (t) => {
  const dir = await tempDir(t);
  const img = await sample(dir);
  const rw = await serve(t, ['-t', '-x', 'disk', '-D', 'a test disk', '-A', img]);
  const info = JSON.parse((await run('nbdinfo', ['--json', `${rw.url}/disk`])).stdout);
  const e = info.exports[0];
  assert.equal(info.protocol, 'newstyle-fixed');
  assert.equal(e['export-size'], 64 << 20);
  assert.equal(e['is_read_only'], false);
  assert.equal(e.description, 'a test disk');
  assert.deepEqual(e.contexts.sort(), ['base:allocation', 'qemu:allocation-depth']);
  assert.equal(e.block_size_maximum, 32 << 20);
  for (const flag of ['can_flush', 'can_fua', 'can_trim', 'can_zero', 'can_cache', 'can_df']) assert.equal(e[flag], true, flag);
  const list = await run('nbdinfo', ['--list', rw.url]);
  assert.match(list.stdout, /export="disk"/);
  await rw.stop();
  const ro = await serve(t, ['-t', '-r', '-e', '2', img]);
  const roInfo = JSON.parse((await run('nbdinfo', ['--json', ro.url])).stdout).exports[0];
  assert.equal(roInfo['is_read_only'], true);
  assert.equal(roInfo['can_multi_conn'], true);
  await ro.stop();
  // One client at a time (qemu-nbd's default -e 1): no multi-conn promise.
  const single = await serve(t, ['-t', '-r', img]);
  assert.equal(JSON.parse((await run('nbdinfo', ['--json', single.url])).stdout).exports[0]['can_multi_conn'], false);
  const missing = await run('nbdinfo', [`${single.url}/nope`]);
  assert.notEqual(missing.code, 0);
});

test('nbd: the allocation map agrees with qemu-img map of the image', needs('qemu-img', 'qemu-io', 'nbdinfo'), async (t) => {
  const dir = await tempDir(t);
  const img = await sample(dir);
  const s = await serve(t, ['-t', '-r', img]);
  const ours = JSON.parse((await run('nbdinfo', ['--map', '--json', s.url])).stdout) as Array<{ offset: number; length: number; type: number }>;
  const peer = JSON.parse(await qemuImg('map', '--output=json', img)) as Array<{ start: number; length: number; data: boolean; zero: boolean }>;
  // Byte by byte (in 64 KiB steps): data vs hole, zero vs not, as qemu-img sees it.
  const at = <T extends { length: number }>(list: T[], start: (x: T) => number, off: number) => list.find((x) => start(x) <= off && off < start(x) + x.length)!;
  for (let off = 0; off < 64 << 20; off += 65536) {
    const o = at(ours, (x) => x.offset, off), p = at(peer, (x) => x.start, off);
    assert.equal((o.type & 1) === 0, p.data, `data at ${off}`);
    assert.equal((o.type & 2) !== 0, p.zero, `zero at ${off}`);
  }
});

test('nbd: nbdcopy, qemu-img convert and qemu-io through the server', needs('qemu-img', 'qemu-io', 'nbdcopy'), async (t) => {
  const dir = await tempDir(t);
  const img = await sample(dir);
  const s = await serve(t, ['-t', '-e', '4', '--discard=unmap', img]);
  await run('nbdcopy', [s.url, join(dir, 'copy.raw')]);
  const info = await run('qemu-img', ['info', '--output=json', s.url]);
  assert.equal(JSON.parse(info.stdout)['virtual-size'], 64 << 20);
  assert.equal((await run('qemu-img', ['compare', '-F', 'raw', img, s.url])).code, 0, 'qemu-img compare against nbd://');
  assert.equal((await run('qemu-img', ['compare', '-F', 'raw', img, join(dir, 'copy.raw')])).code, 0);
  await qemuImg('convert', '-f', 'raw', '-O', 'raw', s.url, join(dir, 'conv.raw'));
  assert.ok((await readFile(join(dir, 'conv.raw'))).equals(await readFile(join(dir, 'copy.raw'))));
  // Three clients copying at once.
  await Promise.all([0, 1, 2].map((i) => run('nbdcopy', [s.url, join(dir, `par${i}.raw`)])));
  for (const i of [0, 1, 2]) assert.ok((await readFile(join(dir, `par${i}.raw`))).equals(await readFile(join(dir, 'copy.raw'))));
  // Writes, zeroes and trims through NBD land in the qcow2 file.
  await qemuIo('-f', 'raw', '-c', 'write -P 0x77 0 64k', '-c', 'write -z 1M 64k', '-c', 'discard 40M 64k', '-c', 'flush', s.url);
  assert.equal(await s.stop(), 0);
  await qemuIo('-f', 'qcow2', '-c', 'read -P 0x77 0 64k', '-c', 'read -P 0 1M 64k', '-c', 'read -P 0 40M 64k', img);
  assert.equal((await run('qemu-img', ['check', img])).code, 0);
});

test('nbd: read-only exports refuse writes; a snapshot is served read-only', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  const img = await sample(dir);
  await qemuImg('snapshot', '-c', 'snap', img);
  await qemuIo('-f', 'qcow2', '-c', 'write -P 0x99 1M 64k', img);
  const s = await serve(t, ['-t', '-r', img]);
  const w = await run('qemu-io', ['-f', 'raw', '-c', 'write -P 1 0 4k', s.url]);
  assert.match(w.stdout + w.stderr, /Operation not permitted|read-only|Permission denied/i);
  await s.stop();
  const snap = await serve(t, ['-t', '-l', 'snap', img]);
  await qemuIo('-f', 'raw', '-r', '-c', 'read -P 0x61 1M 64k', snap.url);
});

test('nbd: --partition serves one partition of an MBR disk, byte for byte', needs('qemu-img', 'sfdisk', 'nbdcopy'), async (t) => {
  const dir = await tempDir(t);
  const disk = join(dir, 'mbr.raw');
  await qemuImg('create', '-q', '-f', 'raw', disk, '32M');
  await run('sh', ['-c', `printf 'start=2048, size=20480, type=83\\nstart=22528, size=30720, type=83\\n' | sfdisk -q ${disk}`]);
  await qemuIo('-f', 'raw', '-c', `write -P 0x5a ${22528 * 512} 1M`, '-c', `write -P 0x5b ${22528 * 512 + (4 << 20)} 4k`, disk);
  const s = await serve(t, ['-t', '-r', '-f', 'raw', '-P', '2', disk]);
  await run('nbdcopy', [s.url, join(dir, 'p2.raw')]);
  const part = (await readFile(disk)).subarray(22528 * 512, (22528 + 30720) * 512);
  assert.ok((await readFile(join(dir, 'p2.raw'))).equals(part));
});

test('nbd: a unix socket, and a server that leaves after its only client (no -t)', needs('qemu-img', 'qemu-io', 'nbdinfo'), async (t) => {
  const dir = await tempDir(t);
  const img = await sample(dir);
  const sock = join(dir, 'nbd.sock');
  const s = await serve(t, ['-r', img], { socket: sock });
  const info = JSON.parse((await run('nbdinfo', ['--json', s.url])).stdout);
  assert.equal(info.exports[0]['export-size'], 64 << 20);
  assert.equal(await s.stop(), 0, 'exits by itself after the client');
});

/** A raw client: send bytes, collect what comes back until the server closes or goes quiet. */
async function rawSession(port: number, send: (write: (b: Buffer) => void, received: () => Buffer) => Promise<void>): Promise<{ data: Buffer; closed: boolean }> {
  const sock = connect(port, '127.0.0.1');
  const chunks: Buffer[] = [];
  let closed = false;
  sock.on('data', (d) => chunks.push(d));
  sock.on('close', () => { closed = true; });
  sock.on('error', () => {});
  await new Promise((r) => sock.once('connect', r));
  await send((b) => sock.write(b), () => Buffer.concat(chunks));
  await new Promise((r) => setTimeout(r, 300));
  sock.destroy();
  return { data: Buffer.concat(chunks), closed };
}
const be = (bits: 16 | 32 | 64, n: number | bigint) => {
  const b = Buffer.alloc(bits / 8);
  if (bits === 16) b.writeUInt16BE(Number(n)); else if (bits === 32) b.writeUInt32BE(Number(n)); else b.writeBigUInt64BE(BigInt(n));
  return b;
};
const wait = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('nbd: hostile clients get an error or a clean disconnect, and the server keeps serving', needs('qemu-img', 'qemu-io', 'nbdinfo'), async (t) => {
  const dir = await tempDir(t);
  const img = await sample(dir);
  const s = await serve(t, ['-t', '-e', '8', img]);
  const IHAVEOPT = 0x49484156454f5054n;
  // Unknown client flags: disconnected after the greeting.
  const a = await rawSession(s.port, async (w) => { w(be(32, 0xff)); });
  assert.equal(a.closed, true);
  assert.equal(a.data.length, 18, 'only the greeting');
  // Bad option magic.
  const b = await rawSession(s.port, async (w) => { w(be(32, 1)); w(Buffer.alloc(16, 0x41)); });
  assert.equal(b.closed, true);
  // An option that claims 10 MiB: refused with NBD_REP_ERR_TOO_BIG once the data is skipped.
  const c = await rawSession(s.port, async (w) => {
    w(be(32, 3)); w(be(64, IHAVEOPT)); w(be(32, 6)); w(be(32, 10 << 20)); w(Buffer.alloc(10 << 20));
    await wait(200);
  });
  assert.equal(c.data.readUInt32BE(18 + 12), 0x80000009);
  // Go, then requests that lie: a read past the end and an oversized read (EINVAL), a bad magic (disconnect).
  const d = await rawSession(s.port, async (w, got) => {
    w(be(32, 3));
    w(Buffer.concat([be(64, IHAVEOPT), be(32, 7), be(32, 6), be(32, 0), be(16, 0)]));
    await wait(100);
    const req = (type: number, handle: number, offset: bigint, length: number) => Buffer.concat([be(32, 0x25609513), be(16, 0), be(16, type), be(64, handle), be(64, offset), be(32, length)]);
    w(req(0, 1, 1n << 40n, 4096));
    w(req(0, 2, 0n, 64 << 20));
    await wait(100);
    void got;
    w(Buffer.alloc(28, 0x13));
  });
  assert.equal(d.closed, true);
  const replies = d.data.toString('hex');
  // Two simple error replies with EINVAL (22) for handles 1 and 2.
  assert.match(replies, /67446698000000160000000000000001/);
  assert.match(replies, /67446698000000160000000000000002/);
  // After all that, a real client still works.
  const info = JSON.parse((await run('nbdinfo', ['--json', s.url])).stdout);
  assert.equal(info.exports[0]['export-size'], 64 << 20);
});

test('nbd: nbdcopy into the server (file → qcow2 export), and a client that hangs up mid-write', needs('qemu-img', 'qemu-io', 'nbdcopy'), async (t) => {
  const dir = await tempDir(t);
  const src = join(dir, 'src.raw');
  await qemuImg('create', '-q', '-f', 'raw', src, '32M');
  await qemuIo('-f', 'raw', '-c', 'write -P 0x31 0 5M', '-c', 'write -P 0x32 20M 3M', src);
  const img = join(dir, 'target.qcow2');
  await qemuImg('create', '-q', '-f', 'qcow2', img, '32M');
  const s = await serve(t, ['-t', '-e', '8', img]);
  await run('nbdcopy', [src, s.url]);
  // A raw client announces a 1 MiB write, sends 1000 bytes and hangs up.
  const cut = await rawSession(s.port, async (w) => {
    w(be(32, 3));
    w(Buffer.concat([be(64, 0x49484156454f5054n), be(32, 7), be(32, 6), be(32, 0), be(16, 0)]));
    await wait(100);
    w(Buffer.concat([be(32, 0x25609513), be(16, 0), be(16, 1), be(64, 9), be(64, 0n), be(32, 1 << 20), Buffer.alloc(1000, 0xee)]));
  });
  assert.equal(cut.closed, false, 'the server waits for the rest; the client is the one who left');
  await qemuIo('-f', 'raw', '-c', 'read -P 0x31 0 64k', s.url);
  assert.equal(await s.stop(), 0);
  assert.equal((await run('qemu-img', ['check', img])).code, 0);
  assert.equal((await run('qemu-img', ['compare', '-f', 'raw', '-F', 'qcow2', src, img])).code, 0);
});

test('nbd: --snapshot keeps the image untouched; --detect-zeroes=unmap deallocates zero writes', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  const img = await sample(dir);
  const before = await readFile(img);
  const snap = await serve(t, ['-t', '-s', img]);
  await qemuIo('-f', 'raw', '-c', 'write -P 0x44 0 2M', '-c', 'read -P 0x44 0 2M', snap.url);
  assert.equal(await snap.stop(), 0);
  assert.ok((await readFile(img)).equals(before), 'the image changed under --snapshot');
  const dz = await serve(t, ['-t', '--detect-zeroes=unmap', '--discard=unmap', img]);
  await qemuIo('-f', 'raw', '-c', 'write -P 0 1M 1M', dz.url);
  assert.equal(await dz.stop(), 0);
  const map = JSON.parse(await qemuImg('map', '--output=json', img)) as Array<{ start: number; length: number; data: boolean; zero: boolean }>;
  const at1M = map.find((m) => m.start <= (1 << 20) && (1 << 20) < m.start + m.length)!;
  assert.equal(at1M.data, false);
  assert.equal(at1M.zero, true);
  assert.equal((await run('qemu-img', ['check', img])).code, 0);
});

test('nbd: --fork returns once the server listens, with the pid file naming the server', needs('qemu-img', 'qemu-io', 'nbdinfo'), async (t) => {
  const dir = await tempDir(t);
  const img = await sample(dir);
  const port = nextPort++;
  const pidFile = join(dir, 'nbd.pid');
  // run() waits for the command's output streams to close: the server must not hold them.
  const r = await run(process.execPath, [diskhubBin, 'nbd', '--fork', '-v', '-t', '-p', String(port), '--pid-file', pidFile, img], { timeoutMs: 20_000 });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, new RegExp(`serving .* at nbd://127\\.0\\.0\\.1:${port}/`));
  const pid = Number((await readFile(pidFile, 'utf8')).trim());
  t.after(() => { try { process.kill(pid, 'SIGTERM'); } catch { /* stopped */ } });
  // Listening already: no wait, no retry.
  assert.equal((await run('nbdinfo', ['--size', `nbd://127.0.0.1:${port}`])).stdout.trim(), String(64 << 20));
  process.kill(pid, 'SIGTERM');
  for (let i = 0; i < 100 && await readFile(pidFile).then(() => true, () => false); i++) await new Promise((res) => setTimeout(res, 50));
  await assert.rejects(readFile(pidFile), 'the server removes its pid file when it stops');

  const bad = await run(process.execPath, [diskhubBin, 'nbd', '--fork', '-p', String(nextPort++), join(dir, 'missing.qcow2')], { timeoutMs: 20_000 });
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /Failed to blk_new_open .*missing\.qcow2/);
});

/** Whether this machine lets us attach loop devices (a container may not). */
async function loopUsable(): Promise<boolean> {
  return (await run('losetup', ['-f']).catch(() => ({ code: 1 }))).code === 0 && (await run('test', ['-c', '/dev/fuse'])).code === 0;
}

test('nbd: a partition exported with --partition mounts (nbdfuse + loop device) and its files read back', needs('qemu-img', 'sfdisk', 'mkfs.ext4', 'nbdfuse', 'fusermount3', 'losetup', 'mount'), async (t) => {
  if (!(await loopUsable())) { t.skip('no usable loop device or /dev/fuse on this machine'); return; }
  const dir = await tempDir(t);
  const root = join(dir, 'root');
  await mkdir(join(root, 'etc'), { recursive: true });
  const hello = `hello from partition 2 of a qcow2 (${process.pid})\n`;
  await writeFile(join(root, 'etc', 'motd'), hello);
  // A GPT disk: a small first partition, then ext4 (populated from a folder, no mount needed) in the second.
  const raw = join(dir, 'disk.raw');
  await qemuImg('create', '-q', '-f', 'raw', raw, '64M');
  await run('sfdisk', ['-q', raw], { input: 'label: gpt\nstart=2048, size=8192, type=uefi\nstart=10240, size=81920, type=linux, name="root"\n' });
  await runOk('mkfs.ext4', ['-q', '-F', '-L', 'root', '-d', root, '-E', `offset=${10240 * 512}`, raw, `${81920 / 2}k`]);
  const qcow2 = join(dir, 'disk.qcow2');
  await qemuImg('convert', '-O', 'qcow2', raw, qcow2);

  const s = await serve(t, ['-t', '-r', '-P', '2', qcow2]);
  const fuse = join(dir, 'fuse');
  const mnt = join(dir, 'mnt');
  await mkdir(fuse);
  await mkdir(mnt);
  const fusePid = join(dir, 'nbdfuse.pid');
  const nbdfuse = spawn('nbdfuse', ['-r', '-P', fusePid, fuse, s.url], { stdio: 'ignore' });
  const fuseExited = new Promise((res) => nbdfuse.on('exit', res));
  let mounted = false;
  // Unmounted here, in order, before the temporary folder (holding both mount points) is removed.
  try {
    for (let i = 0; i < 200 && !(await readFile(fusePid).then(() => true, () => false)); i++) await new Promise((res) => setTimeout(res, 50));
    assert.equal((await stat(join(fuse, 'nbd'))).size, 81920 * 512, 'the FUSE file is the partition');
    await runOk('mount', ['-o', 'loop,ro', join(fuse, 'nbd'), mnt]);
    mounted = true;
    assert.equal(await readFile(join(mnt, 'etc', 'motd'), 'utf8'), hello);
  } finally {
    if (mounted) await runOk('umount', [mnt]);
    await run('fusermount3', ['-u', fuse]);
    if (nbdfuse.exitCode === null) nbdfuse.kill();
    await fuseExited;
  }
});

test('nbd: long reads wait for the socket without piling up listeners', needs('qemu-img', 'qemu-io', 'nbdcopy'), async (t) => {
  const dir = await tempDir(t);
  const img = join(dir, 'big.qcow2');
  await qemuImg('create', '-q', '-f', 'qcow2', img, '192M');
  await qemuIo('-f', 'qcow2', '-c', 'write -P 0x3c 0 160M', img);
  const s = await serve(t, ['-t', '-r', '-e', '4', img]);
  // Slow consumers make the server wait for 'drain' many times on each connection.
  for (let i = 0; i < 2; i++) await runOk('nbdcopy', ['--connections=1', s.url, 'null:']);
  await runOk('nbdcopy', [s.url, join(dir, 'out.raw')]);
  assert.equal((await run('qemu-img', ['compare', '-f', 'qcow2', '-F', 'raw', img, join(dir, 'out.raw')])).code, 0);
  assert.doesNotMatch(s.stderr(), /MaxListenersExceeded|memory leak/);
});
