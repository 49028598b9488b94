/**
 * Adding and erasing LUKS1 key slots of an existing volume: `qemu-img amend` with
 * `state=active|inactive` (raw luks images) or `encrypt.state=…` (qcow2 encrypt.format=luks),
 * with QEMU 7.2's rules, order of checks and messages (crypto/block-luks.c,
 * qcrypto_block_luks_amend_add_keyslot / _erase_keyslots).
 *
 * Crash safety follows QEMU's write order: a new slot's key material is written before the
 * header that makes the slot active (a crash leaves the slot inactive); an erased slot is made
 * inactive in the header first, then its material is overwritten with random data several
 * times (a crash leaves an inactive slot with material that no header points at as live).
 */
import { crypto } from '../builtins.js';
import { DiskError } from '../errors.js';
import type { AmendContext, CreateOption } from '../format.js';
import { serializeLuksHeader, type LuksHeader } from './header.js';
import { findMasterKey, loadKeySlot, sealKeySlot, type AreaReader } from './volume.js';

/** QEMU_BLOCK_LUKS_ERASE_ITERATIONS: passes of random data over an erased slot's key material. */
const ERASE_PASSES = 16;
/** QEMU's default iter-time for a new key slot, in milliseconds. */
const DEFAULT_ITER_TIME = 2000;

/** The LUKS area of a volume: reads and writes with offsets from the header's first byte. */
export interface LuksArea {
  read: AreaReader;
  write(buf: Uint8Array, offset: number): Promise<void>;
  /** After the last write of an amend step. */
  flush(): Promise<void>;
}

/** What an amend needs besides the option values. */
interface KeySlotContext {
  secret(id: string): Uint8Array;
  /** The passphrase the image was opened with (key-secret): it unlocks the master key for a new slot. */
  openSecret?: Uint8Array;
  force: boolean;
}

/** The amend options of a LUKS volume (QEMU's block_crypto_amend_opts_luks); qcow2 prefixes them with `encrypt.`. */
export const LUKS_AMEND_OPTIONS: readonly CreateOption[] = [
  { name: 'state', type: 'string', help: 'Select new state of affected keyslots (active/inactive)' },
  { name: 'keyslot', type: 'number', help: 'Select a single keyslot to modify explicitly' },
  { name: 'old-secret', type: 'string', help: 'Select all keyslots that match this password' },
  { name: 'new-secret', type: 'string', help: 'New secret to set in the matching keyslots. Empty string to erase' },
  { name: 'iter-time', type: 'number', help: 'Time to spend in PBKDF in milliseconds' },
];

const slotRange = (h: LuksHeader) => `must be between 0 and ${h.slots.length - 1}`;

/**
 * Apply key slot options (`state`, `keyslot`, `old-secret`, `new-secret`, `iter-time`, names
 * without their `encrypt.` prefix) to the volume whose header is `h` (changed in place).
 */
export async function amendLuksKeySlots(
  h: LuksHeader, area: LuksArea, options: ReadonlyMap<string, string>, amend: AmendContext | undefined, openSecret: Uint8Array | undefined, file: string,
): Promise<void> {
  const ctx: KeySlotContext = {
    secret: amend?.secret ?? ((id) => { throw new DiskError('EINVAL', `No secret with id '${id}'`); }),
    force: amend?.force ?? false,
    ...(openSecret ? { openSecret } : {}),
  };
  const state = options.get('state');
  if (state === undefined) throw new DiskError('EINVAL', "Parameter 'state' is missing");
  if (state !== 'active' && state !== 'inactive') throw new DiskError('EINVAL', `Parameter 'state' does not accept value '${state}'`);
  const keyslotText = options.get('keyslot');
  const keyslot = keyslotText === undefined ? undefined : Number(keyslotText);
  if (state === 'active') await addKeySlot(h, area, options, keyslot, ctx, file);
  else await eraseKeySlots(h, area, options, keyslot, ctx, file);
}

async function addKeySlot(h: LuksHeader, area: LuksArea, options: ReadonlyMap<string, string>, keyslot: number | undefined, ctx: KeySlotContext, file: string): Promise<void> {
  const newSecret = options.get('new-secret');
  if (newSecret === undefined) throw new DiskError('EINVAL', "'new-secret' is required to activate a keyslot");
  if (options.has('old-secret')) throw new DiskError('EINVAL', "'old-secret' must not be given when activating keyslots");
  let index: number;
  if (keyslot !== undefined) {
    if (keyslot < 0 || keyslot >= h.slots.length) throw new DiskError('EINVAL', `Invalid keyslot ${keyslot} specified, ${slotRange(h)}`);
    index = keyslot;
  } else {
    index = h.slots.findIndex((s) => !s.active);
    if (index < 0) throw new DiskError('EINVAL', "Can't add a keyslot - all keyslots are in use");
  }
  if (!ctx.force && h.slots[index]!.active) throw new DiskError('EINVAL', `Refusing to overwrite active keyslot ${index} - please erase it first`);
  if (!ctx.openSecret) throw new DiskError('EACCES', "Parameter 'key-secret' is required for cipher");
  const masterKey = await findMasterKey(h, area.read, ctx.openSecret, file);
  const passphrase = ctx.secret(newSecret);
  const iterTime = Number(options.get('iter-time') ?? DEFAULT_ITER_TIME);
  const material = await sealKeySlot(h, index, passphrase, masterKey, iterTime);
  await area.write(material, h.slots[index]!.keyOffset * 512);
  await area.flush();
  await area.write(serializeLuksHeader(h), 0);
  await area.flush();
}

async function eraseKeySlots(h: LuksHeader, area: LuksArea, options: ReadonlyMap<string, string>, keyslot: number | undefined, ctx: KeySlotContext, file: string): Promise<void> {
  if (options.has('new-secret')) throw new DiskError('EINVAL', "'new-secret' must not be given when erasing keyslots");
  if (options.has('iter-time')) throw new DiskError('EINVAL', "'iter-time' must not be given when erasing keyslots");
  const oldId = options.get('old-secret');
  const oldPassphrase = oldId === undefined ? undefined : ctx.secret(oldId);
  const active = () => h.slots.filter((s) => s.active).length;
  let erase: number[];
  if (keyslot !== undefined) {
    if (keyslot < 0 || keyslot >= h.slots.length) throw new DiskError('EINVAL', `Invalid keyslot ${keyslot} specified, ${slotRange(h)}`);
    if (oldPassphrase && !await loadKeySlot(h, keyslot, area.read, oldPassphrase, file)) {
      throw new DiskError('EINVAL', `Given keyslot ${keyslot} doesn't contain the given old password for erase operation`);
    }
    // (QEMU's message ends in a space.)
    if (!ctx.force && !h.slots[keyslot]!.active) throw new DiskError('EINVAL', `Given keyslot ${keyslot} is already erased (inactive) `);
    if (!ctx.force && active() === 1) {
      throw new DiskError('EINVAL', `Attempt to erase the only active keyslot ${keyslot} which will erase all the data in the image irreversibly - refusing operation`);
    }
    erase = [keyslot];
  } else if (oldPassphrase) {
    erase = [];
    for (let i = 0; i < h.slots.length; i++) if (await loadKeySlot(h, i, area.read, oldPassphrase, file)) erase.push(i);
    if (erase.length === 0) throw new DiskError('EINVAL', 'No keyslots match given (old) password for erase operation');
    if (!ctx.force && erase.length === active()) {
      throw new DiskError('EINVAL', 'All the active keyslots match the (old) password that was given and erasing them will erase all the data in the image irreversibly - refusing operation');
    }
  } else {
    throw new DiskError('EINVAL', 'To erase keyslot(s), either explicit keyslot index or the password currently contained in them must be given');
  }
  for (const i of erase) {
    const slot = h.slots[i]!;
    Object.assign(slot, { active: false, iterations: 0, salt: new Uint8Array(slot.salt.length) });
    await area.write(serializeLuksHeader(h), 0);
    await area.flush();
    const bytes = h.keyBytes * slot.stripes;
    for (let pass = 0; pass < ERASE_PASSES; pass++) await area.write(crypto().randomBytes(bytes), slot.keyOffset * 512);
    await area.flush();
  }
}
