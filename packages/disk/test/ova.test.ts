/**
 * The OVA reader on hostile archives: bad checksums, sizes past the end, oversized metadata
 * records and OVF descriptors, non-numeric capacities, and random damage give DiskErrors,
 * never another exception or unbounded work.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { MemorySource, formats, getFormat, isDiskError } from '@diskhub/disk';
import { mutationRounds } from './random-writes.js';

/** One tar header block for `name` of `size` bytes (ustar, checksum filled in). */
function tarHeader(name: string, size: number, type = '0', patch: (b: Uint8Array) => void = () => {}): Uint8Array {
  const b = new Uint8Array(512);
  const put = (at: number, s: string) => b.set(Buffer.from(s, 'latin1'), at);
  put(0, name);
  put(100, '0000644\0');
  put(108, '0000000\0');
  put(116, '0000000\0');
  put(124, size.toString(8).padStart(11, '0') + '\0');
  put(136, '00000000000\0');
  put(156, type);
  put(257, 'ustar\x0000');
  patch(b);
  b.fill(0x20, 148, 156);
  let sum = 0;
  for (const x of b) sum += x;
  put(148, sum.toString(8).padStart(6, '0') + '\0 ');
  return b;
}

function tar(entries: [string, Uint8Array, string?][]): Uint8Array {
  const parts: Uint8Array[] = [];
  for (const [name, data, type] of entries) {
    parts.push(tarHeader(name, data.length, type), data, new Uint8Array((512 - (data.length % 512)) % 512));
  }
  parts.push(new Uint8Array(1024));
  return new Uint8Array(Buffer.concat(parts));
}

const OVF = (capacity: string) => Buffer.from(`<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1">
<References><File ovf:href="d.raw" ovf:id="f1"/></References>
<DiskSection><Disk ovf:capacity="${capacity}" ovf:diskId="d1" ovf:fileRef="f1" ovf:format="raw"/></DiskSection></Envelope>`);

test('ova: a raw disk inside a tar reads in place; hostile archives give typed errors', async () => {
  const disk = new Uint8Array(4096).map((_, i) => i & 0xff);
  const good = tar([['a.ovf', OVF('4096')], ['d.raw', disk]]);
  const ova = getFormat('ova');
  assert.equal(ova.probe(good), 100);
  const img = await ova.open(new MemorySource(good, 'a.ova', true), { formats });
  const b = new Uint8Array(100);
  await img.read(b, 1000);
  assert.deepEqual([...b], [...disk.subarray(1000, 1100)]);
  const info = await img.info();
  assert.equal((info['format-specific']!.data as { disks: unknown[] }).disks.length, 1);
  await img.close();

  const cases: [string, Uint8Array, RegExp][] = [
    ['bad checksum', (() => { const t = good.slice(); t[0] = 0x62; return t; })(), /bad checksum/],
    ['size past the end', new Uint8Array(Buffer.concat([tarHeader('a.ovf', 100000), new Uint8Array(1024)])), /extends past the end/],
    ['no ovf', tar([['d.raw', disk]]), /no \.ovf descriptor/],
    ['capacity not a number', tar([['a.ovf', OVF('12abc')], ['d.raw', disk]]), /is not a number/],
    ['disk missing', tar([['a.ovf', OVF('1')]]), /not in the archive/],
    ['huge pax record', (() => { const h = tarHeader('x', 1 << 21, 'x'); const t = new Uint8Array(512 + (1 << 21) + 1024); t.set(h); return t; })(), /too large/],
    ['not an envelope', tar([['a.ovf', Buffer.from('<html/>')]]), /not an OVF descriptor/],
  ];
  for (const [name, bytes, message] of cases) {
    await assert.rejects(ova.open(new MemorySource(bytes, name, true), { formats }), (e) => isDiskError(e) && message.test(e.message), name);
  }
  const r = await mutationRounds(ova, good, 600, [0, 1536], 23);
  assert.ok(r.opened > 0 && r.refused > 0, `both outcomes seen: ${JSON.stringify(r)}`);
});
