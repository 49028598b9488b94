/** Argument handling of `diskhub img`: the same messages and exit codes as qemu-img for bad flags and files. */
import test from 'node:test';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { needs, tempDir } from '@diskhub/testkit';
import { assertSame } from './peer.js';

const CASES = [
  '', 'bogus', '--bogus',
  'info', 'info nonexist', 'info --output=xml a.raw', 'info --bogus a.raw', 'info -z a.raw', 'info a.raw extra',
  'info -Uqz a.raw', 'info -f', 'info --output', 'info --force-share=3 a.raw', 'info --out=json a.raw', 'info a.raw --output=json',
  'check', 'check nonexist', 'check -r foo a.raw', 'check a.raw', 'check --output=json a.raw', 'check -q a.raw',
  'map', 'map nonexist', 'map --start-offset=-1 a.raw', 'map --start-offset=abc a.raw', 'map --max-length=1k --output=json a.raw',
  'compare a.raw', 'compare a.raw nonexist', 'compare nonexist a.raw', 'compare a.raw a.raw b.raw',
  'convert a.raw', 'convert -O foo a.raw x', 'convert nonexist x', 'convert -S abc a.raw x', 'convert -S 100 a.raw x',
  'convert -S 32M a.raw x', 'convert -m 0 a.raw x', 'convert -m 17 a.raw x', 'convert -m abc a.raw x', 'convert -c a.raw x',
  'convert -B a.raw a.raw x', 'convert --target-is-zero a.raw x', 'convert -n a.raw nonexist', 'convert -o foo=1 a.raw x',
  'convert -l foo a.raw x', 'convert -o help',
  'measure', 'measure --size 1G', 'measure -O raw a.raw', 'measure --size 1000', 'measure -O raw --size 1G -f raw',
  'measure -O bogus --size 1G', 'measure -O raw --size 1G a.raw', 'measure --output=json --size 5M', 'measure --size 1X',
  'create', 'create -f raw x.raw', 'create -f raw x.raw 1X', 'create -f raw x.raw -5', 'create -f foo x.raw 1G',
  'create -f raw -o foo=bar x.raw 1G', 'create -f raw x.raw 1e3', 'create -f raw x.raw 9E', 'create -f raw x.raw 1.5',
  'create -f raw -o help', 'create -f raw -o ? x.raw', 'create -f raw -b a.raw -F raw x.raw 1M',
  'create -f raw -o size=1M x.raw 1M', 'create -f raw -o preallocation=bad x.raw 1M',
  'info adir', 'check adir', 'map adir', 'compare adir a.raw', 'convert adir x', 'convert a.raw adir', 'convert a.raw adir/',
  'create -f raw adir 1M', 'measure adir', 'info -f bogus a.raw', 'map -f bogus a.raw', 'convert -f bogus a.raw x',
  'check -f bogus a.raw', 'compare -f bogus a.raw a.raw', 'compare a.raw -F bogus a.raw', 'info /dev/null',
  'create -f raw zz.raw 1M 2M', 'measure -o help', 'measure -O raw -o help --size 1G', 'convert -t x a.raw x', 'convert -T x a.raw x',
  'compare -T x a.raw a.raw', 'check --repair=leaks a.raw', 'check -r all -f raw a.raw', 'check -T x a.raw', 'check -T writethrough a.raw', 'convert -r x a.raw x',
  'snapshot', 'snapshot -l -f raw a.raw', 'snapshot -l a.raw', 'snapshot -lU a.raw', 'snapshot -c x -l a.raw', 'snapshot -l nonexist', 'snapshot -l a.raw b.raw',
  'convert -O raw a.raw a.raw', 'convert -n -O raw a.raw a.raw', 'convert b.raw a.raw a.raw',
];

test('img: errors and exit codes match qemu-img', needs('qemu-img'), async (t) => {
  const dir = await tempDir(t);
  await writeFile(join(dir, 'a.raw'), Buffer.alloc(1 << 20, 7));
  await writeFile(join(dir, 'b.raw'), Buffer.alloc(1 << 20, 7));
  await mkdir(join(dir, 'adir'));
  for (const c of CASES) {
    await assertSame(c === '' ? [] : c.split(' '), dir, c);
  }
});
