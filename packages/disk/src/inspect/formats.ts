/**
 * The format inspections the inspector runs, in the order their findings are reported. Each
 * lives in its format's folder (qcow2/inspect.ts, ...), and the format's driver carries it
 * (FormatDriver.inspections); this list exists because the dashboard bundles the inspector for
 * the browser without the drivers (they use Node APIs). test/inspect.test.ts checks that it
 * holds exactly the registered drivers' inspections.
 */
import type { FormatInspection } from './finding.js';
import { inspectQcow2 } from '../qcow2/inspect.js';
import { inspectQcow1 } from '../qcow1/inspect.js';
import { inspectVmdk } from '../vmdk/inspect.js';
import { inspectVpc } from '../vpc/inspect.js';
import { inspectVhdx } from '../vhdx/inspect.js';
import { inspectVdi } from '../vdi/inspect.js';
import { inspectQed } from '../qed/inspect.js';
import { inspectLuks } from '../luks/inspect.js';
import { inspectParallels } from '../parallels/inspect.js';
import { inspectBochs } from '../bochs/inspect.js';
import { inspectCloop } from '../cloop/inspect.js';
import { inspectDmg } from '../dmg/inspect.js';
import { inspectIso, inspectPartitionTable } from '../raw/inspect.js';
import { inspectOva } from '../ova/inspect.js';

export type { FormatInspection };

export const FORMAT_INSPECTIONS: readonly FormatInspection[] = [
  inspectQcow2, inspectQcow1, inspectVmdk, inspectVpc, inspectVhdx, inspectVdi, inspectQed, inspectLuks,
  inspectParallels, inspectBochs, inspectCloop, inspectDmg, inspectIso, inspectPartitionTable, inspectOva,
];
