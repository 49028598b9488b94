/**
 * Debian or Ubuntu: what differs between them for a debootstrap base — which distribution a
 * suite belongs to, the default mirror, the archive keyring debootstrap checks the Release
 * signature with, and the pockets of the image's apt sources.
 */
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readlink, rename, rm, stat, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { promisify } from 'node:util';
import { gunzipSync } from 'node:zlib';
import type { DebootstrapBase, Distribution } from './recipe.js';
import { BuildError, type BuildSession } from './session.js';

const run = promisify(execFile);

export const DEBOOTSTRAP_SCRIPTS = '/usr/share/debootstrap/scripts';
export const UBUNTU_MIRROR = 'http://archive.ubuntu.com/ubuntu';

/**
 * The Ubuntu archive's signing keys as the ubuntu-keyring package ships them in
 * ubuntu-archive-keyring.gpg: Ubuntu Archive Automatic Signing Key (2012), Ubuntu CD Image
 * Automatic Signing Key (2012), Ubuntu Archive Automatic Signing Key (2018). A keyring fetched from
 * a mirror is used only if every primary key in it is one of these: the fingerprint, not the
 * transport, is what makes it trusted.
 */
export const UBUNTU_ARCHIVE_KEYS = ['790BC7277767219C42C86F933B4FE6ACC0B21F32', '843938DF228D22F7B3742BC0D94AA3F0EFE21092', 'F6ECB3762474EDA9D21B7022871920D1991BC93C'];

/** What debootstrap needs besides the suite and mirror for one distribution. */
export interface DebootstrapPlan {
  distribution: Distribution;
  mirror: string;
  /** The script to run when the machine's debootstrap does not know the suite (a newer release). */
  script?: string;
  /** --keyring: absent for Debian (debootstrap's default is debian-archive-keyring). */
  keyring?: string;
}

/**
 * The distribution of a suite: the recipe's, or the one the machine's debootstrap names — its
 * per-suite scripts are links to the distribution's common script (`sid` for Debian, `gutsy`
 * for Ubuntu).
 */
export async function suiteDistribution(d: DebootstrapBase): Promise<{ distribution: Distribution; script?: string }> {
  const known = await readlink(join(DEBOOTSTRAP_SCRIPTS, d.suite)).then((t) => basename(t), async () =>
    (await stat(join(DEBOOTSTRAP_SCRIPTS, d.suite)).then(() => d.suite, () => null)));
  const byScript: Distribution | undefined = known === 'sid' ? 'debian' : known === 'gutsy' ? 'ubuntu' : undefined;
  const distribution = d.distribution ?? byScript;
  if (!distribution) {
    throw new BuildError(known === null
      ? `base.debootstrap.suite: this machine's debootstrap does not know ${d.suite}: set base.debootstrap.distribution (debian or ubuntu) to build it with that distribution's script`
      : `base.debootstrap.suite: ${d.suite} is neither a Debian nor an Ubuntu suite for this machine's debootstrap (its script is ${known}): set base.debootstrap.distribution`);
  }
  return known === null ? { distribution, script: join(DEBOOTSTRAP_SCRIPTS, distribution === 'ubuntu' ? 'gutsy' : 'sid') } : { distribution };
}

/** The Ubuntu archive keyring: the machine's (ubuntu-keyring installed) or one fetched from the mirror and checked. */
export async function ubuntuKeyring(session: BuildSession, mirror: string, suite: string, cache: string): Promise<string> {
  for (const f of ['/usr/share/keyrings/ubuntu-archive-keyring.gpg', join(cache, 'keyrings', 'ubuntu-archive-keyring.gpg')]) {
    if (await stat(f).then((s) => s.isFile(), () => false)) return f;
  }
  session.info(`  base: fetching the Ubuntu archive keyring (ubuntu-keyring) from ${mirror}`);
  const index = gunzipSync(await fetchBytes(`${mirror}/dists/${suite}/main/binary-amd64/Packages.gz`));
  const stanza = index.toString('latin1').split(/\n\n/).find((s) => /^Package: ubuntu-keyring$/m.test(s));
  const file = stanza && /^Filename: (\S+)$/m.exec(stanza)?.[1];
  if (!file) throw new BuildError(`the Ubuntu archive at ${mirror} lists no ubuntu-keyring package for ${suite}`);
  await mkdir(cache, { recursive: true });
  const work = await mkdtemp(join(cache, 'keyring-'));
  try {
    await writeFile(join(work, 'keyring.deb'), await fetchBytes(`${mirror}/${file}`));
    await run('dpkg-deb', ['--extract', join(work, 'keyring.deb'), join(work, 'x')]);
    const keyring = join(work, 'x', 'usr', 'share', 'keyrings', 'ubuntu-archive-keyring.gpg');
    await checkKeyring(keyring, UBUNTU_ARCHIVE_KEYS, work);
    await mkdir(join(cache, 'keyrings'), { recursive: true });
    const dest = join(cache, 'keyrings', 'ubuntu-archive-keyring.gpg');
    await rename(keyring, dest);
    session.note(`cached the Ubuntu archive keyring as ${dest}`);
    return dest;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/** Refuse a keyring holding a primary key whose fingerprint is not one of `allowed`. */
export async function checkKeyring(keyring: string, allowed: string[], work: string): Promise<void> {
  const home = join(work, 'gnupg');
  await mkdir(home, { recursive: true, mode: 0o700 });
  let out: string;
  try {
    ({ stdout: out } = await run('gpg', ['--homedir', home, '--batch', '--with-colons', '--show-keys', keyring]));
  } catch (e) {
    throw new BuildError(`the Ubuntu archive keyring does not read as an OpenPGP keyring: ${(e as Error).message.split('\n')[0]}`);
  }
  // --with-colons: a `pub` record is followed by its `fpr` record (gpg's doc/DETAILS).
  const lines = out.split('\n');
  const primaries = lines.flatMap((l, i) => (l.startsWith('pub:') && lines[i + 1]?.startsWith('fpr:') ? [lines[i + 1]!.split(':')[9]!] : []));
  const unknown = primaries.filter((f) => !allowed.includes(f));
  if (primaries.length === 0 || unknown.length > 0) {
    throw new BuildError(`the Ubuntu archive keyring fetched holds ${primaries.length === 0 ? 'no key' : `keys that are not Ubuntu's archive keys (${unknown.join(', ')})`}: refused`);
  }
}

async function fetchBytes(url: string): Promise<Buffer> {
  const res = await fetch(url).catch((e: Error) => { throw new BuildError(`${url}: ${(e.cause as Error | undefined)?.message ?? e.message}`); });
  if (!res.ok) throw new BuildError(`${url}: HTTP ${res.status}`);
  return Buffer.from(await res.arrayBuffer());
}

/**
 * The image's own apt sources for Ubuntu: the suite and its -updates and -security pockets from
 * the mirror (Ubuntu's archive carries all three; Debian keeps -security apart).
 */
export function ubuntuSources(d: DebootstrapBase, mirror: string): string[] {
  return ['', '-updates', '-security'].map((p) => `deb ${mirror} ${d.suite}${p} ${d.components.join(' ')}`);
}
