/** The LUKS safety inspection (cryptsetup on-disk formats 1 and 2; qemu-img's "luks" format): the version and where the payload starts. */
import { DiskError } from '../errors.js';
import { MAX_READ } from '../inspect/reader.js';
import { finding, guard, hasBytes, textUntilNul, view, type FormatInspection } from '../inspect/finding.js';

export const inspectLuks: FormatInspection = async (r, file) => {
  const head = await r.read(0, 512);
  if (!hasBytes(head, 0, [0x4c, 0x55, 0x4b, 0x53, 0xba, 0xbe])) return null;
  const f = finding('luks', 'start');
  return guard(f, async () => {
    const v = view(head);
    const version = v.getUint16(6, false);
    f.details.version = version;
    f.details.encrypted = true;
    let payload: number;
    if (version === 1) {
      payload = v.getUint32(104, false) * 512;
    } else if (version === 2) {
      // The JSON area follows the 4 KiB binary header, up to hdr_size; segment 0 is the payload.
      const hdrSize = Number(v.getBigUint64(8, false));
      if (hdrSize < 4096 + 2 || hdrSize - 4096 > MAX_READ) throw new DiskError('ECORRUPT', `${file}: LUKS2 header size ${hdrSize} is invalid`);
      const json = textUntilNul(await r.read(4096, hdrSize - 4096));
      let meta: { segments?: Record<string, { offset?: string }> };
      try { meta = JSON.parse(json); } catch { throw new DiskError('ECORRUPT', `${file}: LUKS2 JSON metadata does not parse`); }
      payload = Number(meta.segments?.['0']?.offset ?? NaN);
      if (!Number.isSafeInteger(payload)) throw new DiskError('ECORRUPT', `${file}: LUKS2 metadata has no data segment`);
    } else {
      throw new DiskError('EUNSUPPORTED', `${file}: LUKS version ${version} is not supported`);
    }
    const size = await r.size();
    f.virtualSize = Math.max(0, size - payload);
  });
};
