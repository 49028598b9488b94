/**
 * Property-based fuzzing of every format parser (fast-check): small valid images made by
 * qemu-img are mutated (bytes, integer fields set to edge values, truncation, a block copied
 * over another) and every mutant goes through what untrusted input meets in diskhub — the
 * safety inspector (whole source and as an upload stream), format probing, and each driver's
 * open, read, block status, info and check. The property: only the engine's typed DiskError
 * may escape, each mutant is handled within MAX_MS, and memory stays bounded. fast-check
 * shrinks a failure to a minimal list of mutations, printed with the seed that replays it.
 *
 * Filesystem seeds (ext images made by mkfs.ext4) go through the filesystem readers instead:
 * open, a full walk, reads and symlinks (exerciseFilesystem), under the same property.
 *
 * Used by test/fuzz.test.ts (bounded, in CI) and fuzz/run.mjs (long runs).
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { DiskError, MemorySource, getFormat, isDiskError, listFormats, probeFormat, rawDriver, openFilesystem, walk, resolvePath, type OpenOptions } from '../src/index.js';
import { StreamInspector, inspectSource } from '../src/inspect/index.js';
import { buildSeSparse, seSparseBytes, seSparseDescriptor } from './sesparse-writer.js';

/**
 * A mutant costing more CPU time than this is a hang (the bound). CPU time, not wall
 * time, so a busy machine does not turn slow scheduling into failures; a mutant that stops
 * making progress altogether (a promise that never settles) is caught by WALL_MS.
 */
export const MAX_MS = 1000;
const WALL_MS = 20_000;
/** Bytes read from each opened mutant (a mutated header may claim terabytes). */
const READ_LIMIT = 1 << 20;
/** Block status is walked over at most this much of the virtual disk... */
const STATUS_LIMIT = 64 << 30;
/** ...and stops after this many extents. */
const MAX_EXTENTS = 100_000;

export interface Seed {
  /** What the seed is, e.g. "qcow2 v3 extended_l2". */
  name: string;
  format: string;
  bytes: Uint8Array;
  /** `bytes` is an extent file that this (unmutated) descriptor names; the image is opened through it. */
  descriptor?: Descriptor;
  /** `bytes` is a filesystem (format raw): it goes through the filesystem readers (exerciseFilesystem). */
  filesystem?: true;
}

/** A text descriptor and the name under which it refers to the (mutated) extent bytes. */
export interface Descriptor { text: string; extent: string }

interface SeedSpec { name: string; format: string; create: string[]; writes?: string[] }

/**
 * Seeds for every registered driver that qemu-img can create; formats with subformats get one
 * seed each. 4 MiB virtual with data in a few clusters (including past the first L2 table or
 * block where the format has one).
 */
const SPECS: SeedSpec[] = [
  { name: 'qcow2 v3', format: 'qcow2', create: ['-o', 'cluster_size=4k'] },
  { name: 'qcow2 v2', format: 'qcow2', create: ['-o', 'compat=0.10,cluster_size=4k'] },
  { name: 'qcow2 extended_l2', format: 'qcow2', create: ['-o', 'extended_l2=on,cluster_size=32k'] },
  { name: 'qcow2 refcount_bits=1 with a zero cluster', format: 'qcow2', create: ['-o', 'refcount_bits=1,cluster_size=4k'], writes: ['write -z 1M 64k'] },
  { name: 'vdi dynamic', format: 'vdi', create: [] },
  { name: 'vdi static', format: 'vdi', create: ['-o', 'static=on'] },
  { name: 'vpc dynamic', format: 'vpc', create: [] },
  { name: 'vpc fixed', format: 'vpc', create: ['-o', 'subformat=fixed'] },
  { name: 'vmdk monolithicSparse', format: 'vmdk', create: [] },
  { name: 'vmdk streamOptimized', format: 'vmdk', create: ['-o', 'subformat=streamOptimized'] },
  { name: 'vhdx', format: 'vhdx', create: ['-o', 'block_size=1M'] },
  { name: 'qed', format: 'qed', create: ['-o', 'cluster_size=4k'] },
  { name: 'parallels', format: 'parallels', create: [] },
  { name: 'qcow', format: 'qcow', create: [] },
];

const DEFAULT_WRITES = ['write -P 0x5a 0 8k', 'write -P 0xa5 1M 4k', 'write -P 0x11 3M 64k'];

/** Make the seeds in `dir` (qemu-img and qemu-io needed); only formats diskhub has a driver for. */
export function makeSeeds(dir: string): Seed[] {
  const known = new Set(listFormats().map((d) => d.name));
  const seeds: Seed[] = [];
  SPECS.forEach((spec, i) => {
    if (!known.has(spec.format)) return;
    const path = join(dir, `seed-${i}.${spec.format}`);
    const streamOptimized = spec.create.includes('subformat=streamOptimized');
    // streamOptimized is written once by convert, not in place: fill a qcow2 first.
    const made = streamOptimized ? join(dir, `seed-${i}.src.qcow2`) : path;
    execFileSync('qemu-img', ['create', '-q', '-f', streamOptimized ? 'qcow2' : spec.format, ...(streamOptimized ? [] : spec.create), made, '4M']);
    const io = (spec.writes ?? DEFAULT_WRITES).flatMap((w) => ['-c', w]);
    execFileSync('qemu-io', ['-f', streamOptimized ? 'qcow2' : spec.format, ...io, made], { stdio: 'ignore' });
    if (streamOptimized) execFileSync('qemu-img', ['convert', '-O', 'vmdk', ...spec.create, made, path]);
    seeds.push({ name: spec.name, format: spec.format, bytes: new Uint8Array(readFileSync(path)) });
  });
  if (known.has('vmdk')) seeds.push(seSparseSeed());
  return seeds;
}

/**
 * qemu-img cannot create seSparse: a crafted extent (test/sesparse-writer.ts) of 20 MiB with
 * data, zero and unmapped grains in two grain tables, opened through its descriptor.
 */
function seSparseSeed(): Seed {
  const capacity = (20 << 20) / 512;
  const grain = (v: number) => new Uint8Array(4096).fill(v);
  const file = buildSeSparse({
    capacity,
    grains: [
      { grain: 0, kind: 'data', data: grain(0x5a) }, { grain: 1, kind: 'zero' }, { grain: 2, kind: 'unmapped' },
      { grain: 300, kind: 'data', data: grain(0xa5) }, { grain: 4097, kind: 'data', data: grain(0x11), index: 2 },
    ],
  });
  return {
    name: 'vmdk seSparse (crafted)', format: 'vmdk', bytes: seSparseBytes(file),
    descriptor: { text: seSparseDescriptor({ extent: 'seed-sesparse.vmdk', sectors: capacity }), extent: 'seed-sesparse.vmdk' },
  };
}

/**
 * Filesystem seeds: small ext filesystems made by mkfs.ext4 -d from a tree with a directory,
 * files with data, a sparse file, fast and slow symlinks, in three layouts (extents with
 * metadata_csum; indirect blocks; inline data), 4 MiB with 1 KiB blocks so that the metadata
 * lies where the mutations mostly land (the first 64 KiB).
 */
export function makeFilesystemSeeds(dir: string): Seed[] {
  const src = join(dir, 'fs-src');
  mkdirSync(join(src, 'dir', 'sub'), { recursive: true });
  for (let i = 0; i < 40; i++) writeFileSync(join(src, 'dir', `file-${i}`), `${i}\n`.repeat(i * 10));
  writeFileSync(join(src, 'dir', 'sub', 'data'), new Uint8Array(70_000).fill(0x5a));
  execFileSync('truncate', ['-s', '1M', join(src, 'sparse')]);
  symlinkSync('dir/file-1', join(src, 'fast'));
  symlinkSync('x/'.repeat(40) + 'y', join(src, 'slow'));
  const layouts = [
    { name: 'ext4 metadata_csum', args: ['-t', 'ext4'] },
    { name: 'ext2 indirect blocks', args: ['-t', 'ext2'] },
    { name: 'ext4 inline_data without checksums', args: ['-t', 'ext4', '-O', 'inline_data,^metadata_csum,^has_journal'] },
  ];
  return layouts.map((l, i) => {
    const path = join(dir, `fs-seed-${i}.img`);
    execFileSync('mkfs.ext4', ['-q', '-F', ...l.args, '-b', '1024', '-N', '128', '-d', src, path, '4M']);
    return { name: `filesystem ${l.name}`, format: 'raw', bytes: new Uint8Array(readFileSync(path)), filesystem: true as const };
  });
}

/** Entries walked and bytes read per file of a mutant filesystem (a mutated directory may claim millions). */
const FS_ENTRY_LIMIT = 2000;
const FS_READ_LIMIT = 256 * 1024;

/** Everything a filesystem read from an untrusted image meets: identification, open, a full walk, reads, symlinks, path lookups. */
export async function exerciseFilesystem(bytes: Uint8Array): Promise<void> {
  const started = process.cpuUsage();
  await guarded('filesystem open/walk/read', async () => {
    const device = await rawDriver.open(new MemorySource(bytes, 'mutant', true), {});
    const fs = await openFilesystem(device);
    let entries = 0;
    for await (const e of walk(fs, await fs.root(), '/')) {
      if (++entries > FS_ENTRY_LIMIT) break;
      const kind = e.node.stat.kind;
      if (kind === 'file') await fs.read(e.node, new Uint8Array(Math.min(e.node.stat.size, FS_READ_LIMIT)), 0);
      if (kind === 'symlink') await fs.readlink(e.node);
    }
    for (const path of ['/fast', '/dir/sub/../file-3', '/slow/..']) {
      await resolvePath(fs, path, { follow: true }).catch((e: unknown) => { if (!isDiskError(e)) throw e; });
    }
  });
  const used = process.cpuUsage(started);
  const ms = (used.user + used.system) / 1000;
  if (ms > MAX_MS) throw new FuzzFailure(`took ${ms.toFixed(0)} ms of CPU (limit ${MAX_MS} ms)`);
}

/** One change to the seed's bytes. Positions are taken modulo the file length. */
export type Mutation =
  | { kind: 'byte'; at: number; value: number }
  | { kind: 'int'; at: number; width: 2 | 4 | 8; littleEndian: boolean; value: bigint }
  | { kind: 'truncate'; at: number }
  | { kind: 'copy'; from: number; to: number; length: number };

/** Integers that break parsers: zero, one, powers of two at field-width edges, all ones. */
const EDGE_VALUES = [0n, 1n, 2n, 7n, 0x1ffn, 0x200n, 0xfffn, 0x1000n, 0xffffn, 0x10000n, 0x7fffffffn, 0x80000000n, 0xffffffffn, 0x100000000n,
  0x1fffffffffffffn, 0x20000000000000n, 0x7fffffffffffffffn, 0x8000000000000000n, 0xffffffffffffffffn];

/**
 * Where mutations land: three times in four in the first 64 KiB or the last 4 KiB of the
 * file (headers, tables, footers), otherwise anywhere.
 */
function position(): fc.Arbitrary<number> {
  return fc.oneof(
    { weight: 2, arbitrary: fc.integer({ min: 0, max: 65535 }) },
    { weight: 1, arbitrary: fc.integer({ min: -4096, max: -1 }) },
    { weight: 1, arbitrary: fc.nat() },
  );
}

export function mutations(): fc.Arbitrary<Mutation[]> {
  const m: fc.Arbitrary<Mutation> = fc.oneof(
    fc.record({ kind: fc.constant('byte' as const), at: position(), value: fc.integer({ min: 0, max: 255 }) }),
    fc.record({
      kind: fc.constant('int' as const), at: position(), width: fc.constantFrom(2 as const, 4 as const, 8 as const), littleEndian: fc.boolean(),
      value: fc.oneof(fc.constantFrom(...EDGE_VALUES), fc.bigInt({ min: 0n, max: 0xffffffffffffffffn })),
    }),
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('truncate' as const), at: position() }) },
    fc.record({ kind: fc.constant('copy' as const), from: position(), to: position(), length: fc.integer({ min: 1, max: 512 }) }),
  );
  return fc.array(m, { minLength: 1, maxLength: 6 });
}

const wrap = (at: number, length: number) => (length === 0 ? 0 : ((at % length) + length) % length);

export function mutate(seed: Uint8Array, ms: Mutation[]): Uint8Array {
  let b = seed.slice();
  for (const m of ms) {
    if (b.length === 0) break;
    switch (m.kind) {
      case 'byte': b[wrap(m.at, b.length)] = m.value; break;
      case 'int': {
        const at = Math.min(wrap(m.at, b.length), Math.max(0, b.length - m.width));
        for (let i = 0; i < m.width && at + i < b.length; i++) {
          const shift = BigInt(8 * (m.littleEndian ? i : m.width - 1 - i));
          b[at + i] = Number((m.value >> shift) & 0xffn);
        }
        break;
      }
      case 'truncate': b = b.slice(0, wrap(m.at, b.length)); break;
      case 'copy': {
        const from = wrap(m.from, b.length), to = wrap(m.to, b.length);
        b.copyWithin(to, from, Math.min(b.length, from + m.length));
        break;
      }
    }
  }
  return b;
}

/** A failure of the property: anything but a DiskError, or too slow. */
export class FuzzFailure extends Error {}

async function guarded(what: string, work: () => Promise<unknown>): Promise<void> {
  try {
    await work();
  } catch (e) {
    if (isDiskError(e)) return;
    throw new FuzzFailure(`${what} threw ${(e as Error)?.stack ?? String(e)}`);
  }
}

/** Everything untrusted bytes meet; throws FuzzFailure when the property does not hold. */
export async function exercise(format: string, bytes: Uint8Array, descriptor?: Descriptor): Promise<void> {
  const started = process.cpuUsage();
  const source = () => new MemorySource(bytes, 'mutant', true);
  // With a descriptor, the driver opens the descriptor and finds the mutant as its extent.
  const image = () => descriptor ? new MemorySource(new TextEncoder().encode(descriptor.text), 'mutant-descriptor', true) : source();
  const openOptions: OpenOptions = descriptor ? {
    openRelated: async (name) => {
      if (name === descriptor.extent) return source();
      throw new DiskError('ENOENT', `no file ${name}`);
    },
  } : {};
  await guarded('inspectSource', () => inspectSource(source()));
  await guarded('StreamInspector', async () => {
    // As an upload arrives: uneven chunks.
    const s = new StreamInspector('mutant');
    for (let at = 0, n = 1000; at < bytes.length; at += n, n = n * 3 + 7) await s.write(bytes.subarray(at, at + n));
    await s.end();
  });
  await guarded('probeFormat', async () => probeFormat(bytes.subarray(0, 1 << 20), 'mutant'));
  const driver = getFormat(format);
  await guarded(`${format} open/read/blockStatus/info`, async () => {
    const img = await driver.open(image(), openOptions);
    try {
      await img.read(new Uint8Array(Math.min(img.size, READ_LIMIT)), 0);
      if (img.size > READ_LIMIT) await img.read(new Uint8Array(4096), Math.floor(img.size / 2 / 4096) * 4096);
      let extents = 0;
      for await (const _ of img.blockStatus(0, Math.min(img.size, STATUS_LIMIT))) {
        if (++extents > MAX_EXTENTS) break;
      }
      await img.info();
    } finally {
      await img.close();
    }
  });
  if (driver.check) await guarded(`${format} check`, () => driver.check!(source(), {}));
  const used = process.cpuUsage(started);
  const ms = (used.user + used.system) / 1000;
  if (ms > MAX_MS) throw new FuzzFailure(`took ${ms.toFixed(0)} ms of CPU (limit ${MAX_MS} ms)`);
}

export interface FuzzRun { seed: string; runs: number; failure?: string }

/**
 * Run the property on one seed for `runs` mutants (or until `seconds` pass). A failure comes
 * back shrunk, with fast-check's replay seed and path.
 */
export async function fuzzSeed(seed: Seed, options: { runs?: number; seconds?: number; rngSeed?: number }): Promise<FuzzRun> {
  let runs = 0;
  const result = await fc.check(
    fc.asyncProperty(mutations(), async (ms) => {
      runs++;
      if (seed.filesystem) await exerciseFilesystem(mutate(seed.bytes, ms));
      else await exercise(seed.format, mutate(seed.bytes, ms), seed.descriptor);
    }),
    {
      numRuns: options.runs ?? Number.MAX_SAFE_INTEGER,
      timeout: WALL_MS,
      ...(options.seconds ? { interruptAfterTimeLimit: options.seconds * 1000, markInterruptAsFailure: false } : {}),
      ...(options.rngSeed !== undefined ? { seed: options.rngSeed } : {}),
    },
  );
  const failure = result.failed
    ? `${seed.name}: ${(result.errorInstance as Error)?.message ?? result.errorInstance}\n  counterexample: ${fc.stringify(result.counterexample)}\n  replay: seed ${result.seed}, path "${result.counterexamplePath}"`
    : undefined;
  return { seed: seed.name, runs, ...(failure ? { failure } : {}) };
}
