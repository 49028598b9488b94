/**
 * The dmg (Apple UDIF) safety inspection: the koly trailer, the last 512 bytes, decoded as the
 * reader decodes it (its forks and plist must lie before it).
 */
import { ascii, finding, guard, type FormatInspection } from '../inspect/finding.js';
import { KOLY_SIZE, SECTOR, parseKoly } from './layout.js';

export const inspectDmg: FormatInspection = async (r, file) => {
  const tail = await r.tail(KOLY_SIZE);
  if (tail.length < KOLY_SIZE || ascii(tail, 0, 4) !== 'koly') return null;
  const f = finding('dmg', 'elsewhere');
  return guard(f, async () => {
    const koly = parseKoly(tail, (await r.size()) - KOLY_SIZE, file);
    f.virtualSize = koly.sectorCount * SECTOR;
  });
};
