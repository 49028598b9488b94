/**
 * `luks`: a raw LUKS1 container as QEMU's "luks" block driver sees it — the header and key
 * material first, then the encrypted payload, which is the virtual disk (its size is the
 * file's size less the payload offset). Opening for I/O needs the passphrase (key-secret).
 */
import { checkRange, type Extent, type WriteZeroesOptions } from '../blockdev.js';
import { DiskError } from '../errors.js';
import type { AmendContext, CreateOption, CreateRequest, FormatDriver, Image, ImageInfo, MeasureRequest, MeasureResult, OpenOptions, ResizeOptions } from '../format.js';
import { preallocateHostRange, type ByteSource } from '../source.js';
import { SECTOR_SIZE } from './cipher.js';
import { LUKS_HEADER_SIZE, isLuks1, luksInfo, parseLuksHeader, type LuksHeader } from './header.js';
import { EncryptedSource } from './source.js';
import { LUKS_OPTION_HELP, formatLuks, luksAreaBytes, luksSpecFromOptions, unlockLuks, writeLuksArea, type LuksCreateOptions } from './volume.js';
import { inspectLuks } from './inspect.js';
import { LUKS_AMEND_OPTIONS, amendLuksKeySlots } from './keyslots.js';

export { SectorCipher } from './cipher.js';
export { EncryptedSource } from './source.js';
export { INVALID_PASSWORD, formatLuks, writeLuksArea, luksSpecFromOptions, unlockLuks, LUKS_OPTION_HELP, type LuksCreateOptions } from './volume.js';
export { MAX_KDF_ITERATIONS, luksInfo, parseLuksHeader, serializeLuksHeader, type LuksHeader } from './header.js';

/** QEMU's words when a LUKS image is opened for I/O without its secret. */
export const LUKS_KEY_SECRET_REQUIRED = "Parameter 'key-secret' is required for cipher";

export class LuksImage implements Image {
  readonly format = 'luks';
  readonly zeroInit = false;
  constructor(
    readonly source: ByteSource,
    readonly header: LuksHeader,
    /** The payload, decrypted (absent when opened header-only). */
    private readonly payload: EncryptedSource | undefined,
    public size: number,
    private readonly writable: boolean,
    /** The passphrase the volume was opened with (a new key slot is unlocked with it). */
    private readonly secret?: Uint8Array,
  ) {}

  /** `qemu-img amend -o state=…,keyslot=…,new-secret=…`: add or erase key slots. */
  async amend(options: Map<string, string>, context?: AmendContext): Promise<boolean> {
    this.checkWritable();
    const source = this.source;
    await amendLuksKeySlots(this.header, {
      read: (buf, offset) => source.read(buf, offset),
      write: (buf, offset) => source.write(buf, offset),
      flush: () => source.flush(),
    }, options, context, this.secret, source.name);
    return true;
  }

  private data(): EncryptedSource {
    if (!this.payload) throw new DiskError('EACCES', LUKS_KEY_SECRET_REQUIRED);
    return this.payload;
  }

  async read(buf: Uint8Array, offset: number): Promise<void> {
    checkRange(this.size, offset, buf.length, 'read');
    const n = await this.data().read(buf, offset);
    if (n < buf.length) buf.fill(0, n);
  }

  async write(buf: Uint8Array, offset: number): Promise<void> {
    this.checkWritable();
    checkRange(this.size, offset, buf.length, 'write');
    await this.data().write(buf, offset);
  }

  async writeZeroes(offset: number, length: number, _options?: WriteZeroesOptions): Promise<void> {
    this.checkWritable();
    checkRange(this.size, offset, length, 'write zeroes');
    // Zeroes are data like any other once encrypted (QEMU writes them too).
    await this.data().punchHole(offset, length);
  }

  async discard(_offset: number, _length: number): Promise<void> {
    // QEMU's luks driver passes no discards down: freed ranges keep their ciphertext.
    this.checkWritable();
  }

  async *blockStatus(offset: number, length: number): AsyncIterable<Extent> {
    checkRange(this.size, offset, length, 'block status');
    // Ciphertext says nothing about zeroes; like QEMU, all of it is data with no host offset.
    if (length > 0) yield { offset, length, data: true, zero: false, present: true, depth: 0 };
  }

  async info(): Promise<ImageInfo> {
    return {
      'virtual-size': this.size,
      filename: this.source.name,
      format: 'luks',
      'actual-size': await this.source.allocatedSize(),
      encrypted: true,
      'format-specific': { type: 'luks', data: luksInfo(this.header) },
      'dirty-flag': false,
    };
  }

  /**
   * block_crypto_co_truncate: the host file is cut or extended under the payload, with the
   * file's preallocation. As in QEMU, a grown area is not encrypted zeroes: it reads as
   * whatever its raw bytes decrypt to until the guest writes it.
   */
  async resize(size: number, options: ResizeOptions): Promise<void> {
    this.checkWritable();
    if (options.preallocation === 'metadata') throw new DiskError('EUNSUPPORTED', 'Unsupported preallocation mode: metadata');
    const start = this.header.payloadOffset * SECTOR_SIZE;
    const old = await this.source.size();
    await this.source.truncate(start + size);
    await preallocateHostRange(this.source, old, start + size - old, options.preallocation);
    this.size = size;
  }

  async flush(): Promise<void> { await this.source.flush(); }
  async close(): Promise<void> { await this.source.close(); }

  private checkWritable(): void {
    if (!this.writable) throw new DiskError('EROFS', `${this.source.name}: image is opened read-only`);
  }
}

/** `-o` options of `create -f luks`, in the order qemu-img prints them. */
export const LUKS_CREATE_OPTIONS: readonly CreateOption[] = [
  { name: 'size', type: 'size', help: 'Virtual disk size' },
  ...LUKS_OPTION_HELP,
];

/** The encrypt.* (or bare) LUKS options out of a create option map. */
export function luksCreateOptions(options: Record<string, string>, prefix = ''): LuksCreateOptions {
  const out: Record<string, string> = {};
  for (const o of LUKS_OPTION_HELP) {
    const v = options[prefix + o.name];
    if (v !== undefined && o.name !== 'key-secret') out[o.name] = v;
  }
  return out as LuksCreateOptions;
}

export const luksDriver: FormatDriver = {
  name: 'luks',
  inspections: [inspectLuks],
  probe(head: Uint8Array): number {
    return isLuks1(head) ? 100 : 0;
  },
  createOptions: LUKS_CREATE_OPTIONS,
  amendOptions: LUKS_AMEND_OPTIONS,
  async open(source: ByteSource, options: OpenOptions): Promise<Image> {
    const fileSize = await source.size();
    const head = new Uint8Array(LUKS_HEADER_SIZE);
    if (await source.read(head, 0) !== head.length) throw new DiskError('ETRUNCATED', `${source.name}: LUKS header is truncated`);
    const header = parseLuksHeader(head, fileSize, source.name);
    const payloadStart = header.payloadOffset * SECTOR_SIZE;
    if (payloadStart > fileSize) {
      throw new DiskError('ECORRUPT', `${source.name}: LUKS payload offset ${payloadStart} lies past the end of the file (${fileSize} bytes)`);
    }
    if (options.snapshot !== undefined) throw new DiskError('EUNSUPPORTED', `${source.name}: luks images have no snapshots`);
    let payload: EncryptedSource | undefined;
    // Like QEMU's BDRV_O_NO_IO opens, a header-only open does not even look at the secret.
    if (!options.headerOnly) {
      if (options.secret === undefined) throw new DiskError('EACCES', LUKS_KEY_SECRET_REQUIRED);
      const cipher = await unlockLuks(header, (buf, offset) => source.read(buf, offset), options.secret, source.name);
      payload = new EncryptedSource(source, cipher, payloadStart);
    }
    return new LuksImage(source, header, payload, fileSize - payloadStart, !!options.writable, options.secret);
  },
  async measure(request: MeasureRequest): Promise<MeasureResult> {
    // The header area, then the payload: the virtual size, every byte of it written.
    const size = request.source ? request.source.size : request.size ?? 0;
    const { spec } = luksSpecFromOptions(luksCreateOptions(request.options));
    if (request.options['key-secret'] === undefined) throw new DiskError('EACCES', LUKS_KEY_SECRET_REQUIRED);
    const total = luksAreaBytes(spec.keyBytes) + size;
    return { required: total, 'fully-allocated': total };
  },
  async create(target: ByteSource, request: CreateRequest): Promise<void> {
    if (request.backingFile) throw new DiskError('EUNSUPPORTED', "Backing file not supported for file format 'luks'");
    if (request.secret === undefined) throw new DiskError('EACCES', LUKS_KEY_SECRET_REQUIRED);
    const prealloc = request.options.preallocation ?? 'off';
    if (!['off', 'falloc', 'full'].includes(prealloc)) throw new DiskError('EINVAL', `invalid parameter value: ${prealloc}`);
    const volume = await formatLuks(luksCreateOptions(request.options), request.secret);
    const payloadStart = volume.header.payloadOffset * SECTOR_SIZE;
    await target.truncate(0);
    await writeLuksArea(volume, (buf, offset) => target.write(buf, offset));
    await target.truncate(payloadStart + request.size);
    // Preallocation is the host file's: plain zeroes (or reserved space) under the payload.
    await preallocateHostRange(target, payloadStart, request.size, prealloc);
  },
};
