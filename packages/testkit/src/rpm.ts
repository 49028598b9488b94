/** rpm databases made by the real rpm tools, for the rpmdb reader's tests. */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { runOk } from './run.js';

/**
 * A real rpm database: `count` + 1 packages built by rpmbuild (one spec, subpackages with epochs 0-3 or
 * none, some with descriptions longer than a page so their headers overflow), recorded by
 * `rpm -i --justdb` in a sqlite rpmdb; and what `rpm -qa` says of it.
 */
export async function rpmDatabase(dir: string, dbpath: string, count: number): Promise<string[]> {
  const spec = ['Name: base', 'Version: 1.0', 'Release: 1.el9', 'Summary: test', 'License: MIT', 'BuildArch: noarch', '%description', 'base', '', '%files', ''];
  for (let i = 0; i < count; i++) {
    const n = `pkg${String(i).padStart(3, '0')}`;
    spec.push(`%package -n ${n}`, `Summary: test ${i}`, `Version: ${i}.${i % 7}`, `Release: ${i % 3}.el9`, ...(i % 5 === 0 ? [`Epoch: ${i % 4}`] : []),
      `%description -n ${n}`, 'a long description '.repeat(i % 10 ? 50 : 600), '', `%files -n ${n}`, '');
  }
  await writeFile(join(dir, 'many.spec'), spec.join('\n'));
  await runOk('rpmbuild', ['-bb', '--define', `_topdir ${join(dir, 'rpmbuild')}`, join(dir, 'many.spec')]);
  const rpms = join(dir, 'rpmbuild', 'RPMS', 'noarch');
  const files = (await runOk('ls', [rpms])).split('\n').filter(Boolean).map((f) => join(rpms, f));
  const db = ['--dbpath', dbpath, '--define', '_db_backend sqlite'];
  await runOk('rpm', [...db, '--initdb']);
  await runOk('rpm', [...db, '-i', '--justdb', '--nodeps', ...files]);
  return (await runOk('rpm', [...db, '-qa', '--qf', '%{NAME} %|EPOCH?{%{EPOCH}:}:{}|%{VERSION}-%{RELEASE} %{ARCH}\\n'])).split('\n').filter(Boolean).sort();
}

