/**
 * The root filesystem a build starts from: a debootstrap of a Debian (or Ubuntu) suite, an
 * existing image's root filesystem, or a root filesystem tarball — unpacked into the mounted
 * root partition.
 *
 * debootstrap results are cached as tarballs under the build cache, keyed by everything that
 * decides their content (suite, mirror, variant, components, architecture), and its downloaded
 * packages in the cache's debs/ directory (`--cache-dir`), so a second build unpacks a tarball
 * in seconds instead of downloading and installing the base system again.
 */
import { createHash } from 'node:crypto';
import { mkdir, readdir, readFile, rename, rm, stat, unlink } from 'node:fs/promises';
import { writeInRoot } from './rootpath.js';
import { join } from 'node:path';
import { convertFile, openImage, readPartitionTable, identifyFilesystem, WindowDevice } from '@diskhub/disk';
import type { Base, DebootstrapBase } from './recipe.js';
import { attachLoop, mountAt } from './disk.js';
import { BuildError, type BuildSession } from './session.js';
import { type DebootstrapPlan, suiteDistribution, ubuntuKeyring, ubuntuSources, UBUNTU_MIRROR } from './distribution.js';

export const DEFAULT_MIRROR = 'http://deb.debian.org/debian';

/** One `deb` line of apt's configuration (one-line or deb822 format). */
export interface AptSource { uri: string; suites: string[]; components: string[] }

/** The `deb` sources of an apt configuration: sources.list lines and sources.list.d/*.list and *.sources files. */
export async function aptSources(etcApt = '/etc/apt'): Promise<AptSource[]> {
  const found: AptSource[] = [];
  const lists = [join(etcApt, 'sources.list')];
  const sources: string[] = [];
  for (const n of (await readdir(join(etcApt, 'sources.list.d')).catch(() => [] as string[])).sort()) {
    if (n.endsWith('.list')) lists.push(join(etcApt, 'sources.list.d', n));
    else if (n.endsWith('.sources')) sources.push(join(etcApt, 'sources.list.d', n));
  }
  for (const f of lists) {
    const text = await readFile(f, 'utf8').catch(() => '');
    for (const raw of text.split('\n')) {
      // sources.list(5): deb [ option=value ... ] uri suite [component1] [component2] [...]
      const line = raw.replace(/#.*/, '').replace(/\[[^\]]*\]/, ' ').trim().split(/\s+/);
      if (line[0] !== 'deb' || line.length < 3) continue;
      found.push({ uri: line[1]!, suites: [line[2]!], components: line.slice(3) });
    }
  }
  for (const f of sources) {
    const text = await readFile(f, 'utf8').catch(() => '');
    // deb822 stanzas separated by blank lines; fields Types, URIs, Suites, Components, Enabled.
    for (const stanza of text.split(/\n\s*\n/)) {
      const fields = new Map<string, string>();
      let last = '';
      for (const l of stanza.split('\n')) {
        if (l.startsWith('#')) continue;
        const m = /^([\w-]+):\s*(.*)$/.exec(l);
        if (m) { last = m[1]!.toLowerCase(); fields.set(last, m[2]!); } else if (/^\s/.test(l) && last) fields.set(last, `${fields.get(last)} ${l.trim()}`);
      }
      if (!(fields.get('types') ?? '').split(/\s+/).includes('deb') || /^no$/i.test(fields.get('enabled') ?? '')) continue;
      const split = (k: string) => (fields.get(k) ?? '').split(/\s+/).filter((x) => x !== '');
      for (const uri of split('uris')) found.push({ uri, suites: split('suites'), components: split('components') });
    }
  }
  return found;
}

/**
 * The mirror the machine itself uses: the first `deb` source that carries a release suite
 * (not -security, -updates or -backports, which live elsewhere or hold only updates).
 */
export async function machineMirror(etcApt = '/etc/apt'): Promise<string | null> {
  for (const s of await aptSources(etcApt)) {
    if (s.uri.startsWith('cdrom:')) continue;
    if (s.suites.some((x) => /^[a-z]+$/.test(x))) return s.uri.replace(/\/+$/, '');
  }
  return null;
}

export function cacheDir(): string {
  return process.env.DISKHUB_BUILD_CACHE || '/var/cache/diskhub/build';
}

/** Fill `root` (the mounted root filesystem) from the recipe's base. */
export async function unpackBase(session: BuildSession, base: Base, root: string, work: string): Promise<void> {
  if (base.kind === 'debootstrap') return await debootstrapBase(session, base.debootstrap, root);
  if (base.kind === 'tarball') {
    await stat(base.path).catch(() => { throw new BuildError(`base.tarball: ${base.path}: no such file`); });
    // GNU tar recognises gzip, xz, zstd, bzip2 by content on extraction.
    return void await session.run('tar', ['--extract', '--file', base.path, '--directory', root, '--numeric-owner', '--preserve-permissions', '--xattrs', '--xattrs-include=*']);
  }
  await imageBase(session, base.path, base.format, root, work);
}

/**
 * The image's apt sources: the suite from the mirror, and the suite's -updates and -security
 * from wherever the machine's apt configuration takes them (debootstrap writes only the first).
 */
async function writeAptSources(root: string, d: DebootstrapBase, plan: DebootstrapPlan): Promise<void> {
  const mirror = plan.mirror;
  if (plan.distribution === 'ubuntu') {
    return void await writeInRoot(root, '/etc/apt/sources.list', `${['# written by diskhub build', ...ubuntuSources(d, mirror)].join('\n')}\n`);
  }
  const lines = ['# written by diskhub build', `deb ${mirror} ${d.suite} ${d.components.join(' ')}`];
  for (const s of await aptSources()) {
    for (const x of s.suites) {
      if (x !== `${d.suite}-updates` && x !== `${d.suite}-security`) continue;
      const line = `deb ${s.uri.replace(/\/+$/, '')} ${x} ${(s.components.length > 0 ? s.components : d.components).join(' ')}`;
      if (!lines.includes(line)) lines.push(line);
    }
  }
  await writeInRoot(root, '/etc/apt/sources.list', `${lines.join('\n')}\n`);
}

async function debootstrapBase(session: BuildSession, d: DebootstrapBase, root: string): Promise<void> {
  const plan = await debootstrapPlan(d);
  await debootstrapInto(session, d, plan, root);
  await writeAptSources(root, d, plan);
}

/** The distribution and mirror of a debootstrap base (the keyring is fetched only when debootstrap runs). */
export async function debootstrapPlan(d: DebootstrapBase): Promise<DebootstrapPlan> {
  const { distribution, script } = await suiteDistribution(d);
  // The machine's apt configuration names a Debian mirror: it is the default for Debian suites only.
  const mirror = d.mirror ?? (distribution === 'ubuntu' ? UBUNTU_MIRROR : (await machineMirror()) ?? DEFAULT_MIRROR);
  return { distribution, mirror, ...(script ? { script } : {}) };
}

async function debootstrapInto(session: BuildSession, d: DebootstrapBase, plan: DebootstrapPlan, root: string): Promise<void> {
  const { mirror } = plan;
  const variant = d.variant ?? 'default';
  const arch = 'amd64';
  const key = createHash('sha256').update(JSON.stringify({ suite: d.suite, distribution: plan.distribution, mirror, variant, components: d.components, arch })).digest('hex').slice(0, 16);
  const cache = cacheDir();
  const tarball = join(cache, 'debootstrap', `${d.suite}-${variant}-${arch}-${key}.tar.zst`);
  if (await stat(tarball).then(() => true, () => false)) {
    session.info(`  base: cached debootstrap of ${d.suite} from ${mirror} (${tarball})`);
    await session.run('tar', ['--extract', '--zstd', '--file', tarball, '--directory', root, '--numeric-owner', '--preserve-permissions', '--xattrs', '--xattrs-include=*']);
    return;
  }
  session.info(`  base: debootstrap ${d.suite} from ${mirror} (not cached yet: a few minutes)`);
  const debs = join(cache, 'debs', `${d.suite}-${arch}`);
  await mkdir(debs, { recursive: true });
  const keyring = plan.distribution === 'ubuntu' ? await ubuntuKeyring(session, mirror, d.suite, cache) : undefined;
  await session.run('debootstrap', [
    `--arch=${arch}`, ...(variant === 'default' ? [] : [`--variant=${variant}`]), `--components=${d.components.join(',')}`,
    ...(keyring ? [`--keyring=${keyring}`] : []), `--cache-dir=${debs}`, d.suite, root, mirror, ...(plan.script ? [plan.script] : []),
  ]);
  // debootstrap unmounts what it mounted in the target; the tarball must hold only the target,
  // without the packages it also keeps in the target's apt cache (they are in debs/).
  await removeDebs(join(root, 'var', 'cache', 'apt', 'archives'));
  await mkdir(join(cache, 'debootstrap'), { recursive: true });
  const partial = `${tarball}.partial-${process.pid}`;
  try {
    await session.run('tar', ['--create', '--zstd', '--file', partial, '--directory', root, '--numeric-owner', '--xattrs', '--xattrs-include=*', '--one-file-system', '.']);
    await rename(partial, tarball);
    session.note(`cached the debootstrap result as ${tarball}`);
  } catch (e) {
    await unlink(partial).catch(() => undefined);
    throw e;
  }
}

/**
 * An existing image: converted to raw by the engine (any format it reads), then its root
 * filesystem (the largest ext4 or xfs partition, or the whole disk) mounted read-only through a
 * loop device and copied into ours.
 */
async function imageBase(session: BuildSession, path: string, format: string | undefined, root: string, work: string): Promise<void> {
  const raw = join(work, 'base.raw');
  // The engine's conversion in this process, stopped by the session's signal (the root
  // filesystem is mounted by now: the tear-down must run, not a conversion's own exit).
  session.note(`converting ${path} to raw (${raw})`);
  session.onTeardown(`rm ${raw}`, () => unlink(raw).catch(() => undefined));
  try {
    await convertFile(path, format, raw, 'raw', { signal: session.signal });
  } catch (e) {
    session.checkInterrupted();
    throw new BuildError(`base.image: ${path}: ${(e as Error).message}`);
  }
  const image = await openImage(raw, { format: 'raw' });
  let best: { start: number; size: number; type: string } | null = null;
  try {
    const table = await readPartitionTable(image);
    const candidates = table ? table.partitions.filter((p) => !p.beyondDisk).map((p) => ({ start: p.start, size: p.size })) : [{ start: 0, size: image.size }];
    for (const c of candidates) {
      const fs = (await identifyFilesystem(new WindowDevice(image, c.start, c.size)).catch(() => null))?.type;
      if (fs && ['ext2', 'ext3', 'ext4', 'xfs'].includes(fs) && (!best || c.size > best.size)) best = { ...c, type: fs };
    }
  } finally {
    await image.close();
  }
  if (!best) throw new BuildError(`base.image: ${path}: no ext2/3/4 or xfs root filesystem found on it`);
  const dev = await attachLoop(session, raw, best.start, best.size);
  const mnt = join(work, 'base');
  await mountAt(session, dev, mnt, ['-o', best.type === 'xfs' ? 'ro,norecovery,nouuid' : 'ro,noload', '-t', best.type]);
  await session.run('cp', ['--archive', '--one-file-system', `${mnt}/.`, `${root}/`]);
}

/** The .deb files of an apt archives directory and its partial/ (what apt-get clean removes). */
export async function removeDebs(dir: string): Promise<void> {
  for (const d of [dir, join(dir, 'partial')]) {
    for (const n of await readdir(d).catch(() => [] as string[])) if (n.endsWith('.deb')) await rm(join(d, n), { force: true });
  }
}
