/**
 * Images made by `diskhub build` for the tests that boot or clean them (boot-test, the CI
 * chain): built once per recipe text and build code, and kept between runs.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { diskhub, repoRoot } from '@diskhub/testkit';

export const EXAMPLE_RECIPE = join(repoRoot, 'examples', 'debian-12-minimal.yaml');

/**
 * The example recipe broken the two ways issue 21 names: cloud-init switched off, and a network
 * configuration that pins the NIC by its MAC address (a netplan `match: macaddress:`, which
 * sysprep rightly leaves alone — its udev-persistent-net and net-hwaddr operations remove the
 * other two kinds, so they cannot survive to the lint).
 */
export function brokenRecipe(recipe: string): string {
  const broken = recipe.replace(/^files:\n/m, [
    'files:',
    '  - path: /etc/cloud/cloud-init.disabled',
    '    content: ""',
    '  - path: /etc/netplan/50-pinned-nic.yaml',
    '    mode: "0600"',
    '    content: |',
    '      network:',
    '        version: 2',
    '        ethernets:',
    '          nic0:',
    '            match:',
    '              macaddress: "52:54:00:12:34:56"',
    '            dhcp4: true',
    '',
  ].join('\n'));
  assert.notEqual(broken, recipe, 'the example recipe has a files section');
  return broken;
}

/**
 * The example recipe's image, built by `diskhub build` once per recipe text and kept (a build
 * takes minutes): under DISKHUB_TEST_IMAGE_CACHE, default /var/tmp/diskhub-test-images.
 */
export async function builtImage(name: string, recipeText: string): Promise<string> {
  const cache = process.env.DISKHUB_TEST_IMAGE_CACHE ?? '/var/tmp/diskhub-test-images';
  await mkdir(cache, { recursive: true });
  // Keyed by the recipe and by the build code that runs (dist/src/image-build): a fix to the build rebuilds.
  const key = createHash('sha256').update(recipeText);
  const buildCode = join(repoRoot, 'packages', 'cli', 'dist', 'src', 'image-build');
  for (const f of (await readdir(buildCode)).filter((n) => n.endsWith('.js')).sort()) key.update(f).update(await readFile(join(buildCode, f)));
  const out = join(cache, `${name}-${key.digest('hex').slice(0, 16)}.qcow2`);
  if (await stat(out).then((st) => st.isFile(), () => false)) return out; // build writes elsewhere and renames: a file here is whole
  const recipe = join(cache, `${name}.yaml`);
  await writeFile(recipe, recipeText);
  // Its own package cache: apt in a build does not wait for another build's lock on a shared one
  // (build.test.ts may be building at the same time).
  const env = { ...process.env, DISKHUB_BUILD_CACHE: process.env.DISKHUB_BUILD_CACHE ?? join(cache, 'build-cache') };
  const r = await diskhub(['build', '-q', '--force', recipe, '-o', out], { env, timeoutMs: 30 * 60_000 });
  assert.equal(r.code, 0, `diskhub build ${name}: ${r.stderr}`);
  return out;
}

