/**
 * Format drivers: one folder per format (raw/, qcow2/, ...). A driver probes bytes, opens a
 * ByteSource as an Image (a BlockDevice that also describes itself), and creates new images.
 * The registry in formats.ts lists them; nothing else needs to know which formats exist.
 */
import type { BlockDevice } from './blockdev.js';
import type { ByteSource } from './source.js';
import type { FormatInspection } from './inspect/finding.js';
import { DiskError } from './errors.js';

/** What `qemu-img info --output=json` prints for one image (keys as qemu-img spells them). */
export interface ImageInfo {
  'virtual-size': number;
  filename: string;
  format: string;
  'actual-size'?: number;
  'cluster-size'?: number;
  encrypted?: boolean;
  compressed?: boolean;
  'dirty-flag'?: boolean;
  'backing-filename'?: string;
  'full-backing-filename'?: string;
  'backing-filename-format'?: string;
  snapshots?: SnapshotInfo[];
  'format-specific'?: { type: string; data: Record<string, unknown> };
  [key: string]: unknown;
}

/** One internal snapshot, as `qemu-img info` / `snapshot -l` report it. */
export interface SnapshotInfo {
  id: string;
  name: string;
  'vm-state-size': number;
  'date-sec': number;
  'date-nsec': number;
  'vm-clock-sec': number;
  'vm-clock-nsec': number;
  icount?: number;
}

/** A reference from an image to its backing file, as stored in the image. */
export interface BackingRef {
  /** The name as written in the image header (may be relative). */
  filename: string;
  /** The declared format, if the image records one. */
  format?: string;
}

/** The message (DiskError ENOENT) of opening a snapshot view that does not exist, as QEMU words it. */
export const SNAPSHOT_NOT_FOUND = "Can't find snapshot";

export interface OpenOptions {
  /** Open for writing. */
  writable?: boolean;
  /** Allow opening an image that names an external data file (qcow2 data_file, vmdk extents outside the descriptor's folder). */
  allowExternalData?: boolean;
  /** Open this internal snapshot's view (read-only). */
  snapshot?: string;
  /** Which disk of an OVA appliance to open (0 = the first; `appliance.ova:N` on a path). */
  ovaDisk?: number;
  /**
   * The passphrase of an encrypted image (the bytes of the secret its key-secret /
   * encrypt.key-secret option names). Never put into messages.
   */
  secret?: Uint8Array;
  /**
   * Only the image's description will be read (`qemu-img info`, QEMU's BDRV_O_NO_IO): an
   * encrypted image then opens without its secret, and reads fail.
   */
  headerOnly?: boolean;
  /** Resolve a file name relative to the image (for external data files and extents). */
  openRelated?: (filename: string, writable: boolean) => Promise<ByteSource>;
  /**
   * The format registry, for a driver that opens an image inside its own (an OVA's disk).
   * openSource passes it; a driver never imports the registry, which imports every driver.
   */
  formats?: FormatRegistry;
}

/** A persistent dirty bitmap with its bits (bit i of byte j: granule 8j+i), as convert --bitmaps copies it. */
export interface PersistentBitmap {
  name: string;
  /** qcow2 directory flags: 1 in use (inconsistent), 2 auto (enabled). */
  flags: number;
  granularityBits: number;
  bits: Uint8Array;
}

export interface Image extends BlockDevice {
  readonly format: string;
  readonly source: ByteSource;
  /** The backing file this image names (not yet opened), if any. */
  readonly backingRef?: BackingRef;
  /**
   * Set by the chain opener: the opened backing image. Reads of ranges this image does
   * not allocate fall through to it; without one they read as zeroes.
   */
  backing?: Image;
  info(): Promise<ImageInfo>;
  snapshots?(): Promise<SnapshotInfo[]>;
  /**
   * `qemu-img resize` (QEMU's bdrv_co_truncate): change the virtual size, in place. Absent:
   * the format cannot be resized ("Image format driver does not support resize"). Refusals
   * are DiskErrors carrying QEMU's message.
   */
  resize?(size: number, options: ResizeOptions): Promise<void>;
  /** `qemu-img snapshot -c`: a new internal snapshot of the disk (no VM state), as QEMU makes it. */
  createSnapshot?(name: string, date: { sec: number; nsec: number }): Promise<void>;
  /** `qemu-img snapshot -a`: revert the disk to the snapshot named by ID or name. */
  applySnapshot?(idOrName: string): Promise<void>;
  /**
   * `qemu-img amend -o ...`: change options of an existing image in place; `options` are
   * validated against the driver's amendOptions (sizes in bytes, booleans on/off). Resolves
   * true when the image changed (qemu-img's progress shows a step then).
   */
  amend?(options: Map<string, string>, context?: AmendContext): Promise<boolean>;
  /** `qemu-img bitmap --add`: a new persistent dirty bitmap, enabled and clear (granularity in bytes). */
  addBitmap?(name: string, granularity?: number): Promise<void>;
  /** `qemu-img bitmap --remove`. */
  removeBitmap?(name: string): Promise<void>;
  /** `qemu-img bitmap --clear`. */
  clearBitmap?(name: string): Promise<void>;
  /** `qemu-img bitmap --enable` / `--disable`. */
  enableBitmap?(name: string, enabled: boolean): Promise<void>;
  /**
   * `qemu-img bitmap --merge SOURCE [-b file]`: the source bitmap's dirty bytes become dirty in
   * `target`; `from` is the source's content when it lives in another image.
   */
  mergeBitmap?(target: string, source: string, from?: { granularity: number; bits: Uint8Array }): Promise<void>;
  /** A persistent dirty bitmap's granularity and bits (the source of a merge from another image). */
  readBitmap?(name: string): Promise<{ granularity: number; bits: Uint8Array }>;
  /** `qemu-img snapshot -d`: delete the first snapshot with this name. */
  deleteSnapshot?(name: string): Promise<void>;
  /**
   * False when a newly created image does not read as zeroes (a LUKS payload that was never
   * written decrypts to noise), so a converter must write the source's zero runs as well.
   */
  readonly zeroInit?: boolean;
  /** Allocation granularity (qcow2 cluster size, vmdk grain...); converters align writes to it. */
  readonly clusterSize?: number;
  /**
   * Store one cluster-aligned, cluster-sized run compressed (`convert -c`). `buf` may be
   * shorter than a cluster only at the end of the disk. convertImage calls it for several
   * clusters at once (up to a chunk's worth, never the same cluster twice) so that async
   * zlib/zstd work spreads over the libuv threadpool: the driver must serialise its own
   * allocation and metadata updates. `buf` is the caller's again once the promise settles.
   */
  writeCompressed?(buf: Uint8Array, offset: number): Promise<void>;
  /**
   * Rewrite the backing file reference in the image's header (QEMU's bdrv_change_backing_file;
   * `undefined` removes it). Writable images of formats with backing files only. Errors: EINVAL
   * (a name the format cannot hold), ENOSPC (no room left in the header).
   */
  changeBackingFile?(filename: string | undefined, format: string | undefined): Promise<void>;
  /** The image's persistent dirty bitmaps (convert --bitmaps). */
  readBitmaps?(): Promise<PersistentBitmap[]>;
  /** The format (and version) keeps persistent dirty bitmaps (qcow2 v3); addBitmaps also needs the image writable. */
  readonly storesBitmaps?: boolean;
  /** Store persistent dirty bitmaps into an image that has none (convert --bitmaps). */
  addBitmaps?(list: PersistentBitmap[]): Promise<void>;
  /** Deallocate everything so that reads fall through to the backing file (QEMU's bdrv_make_empty; commit's last step). */
  makeEmpty?(): Promise<void>;
}

/** QEMU's PreallocMode, as `qemu-img resize --preallocation=` names it. */
export type Preallocation = 'off' | 'metadata' | 'falloc' | 'full';

export interface ResizeOptions {
  preallocation: Preallocation;
}

/** `qemu-img check` options. */
export interface CheckOptions {
  /** `-r leaks` or `-r all`; absent: report only. */
  repair?: 'leaks' | 'all';
  signal?: AbortSignal;
}

/**
 * What `qemu-img check --output=json` prints (same keys), plus the human report lines.
 * Exit codes follow from it: 0 clean, 2 corruptions, 3 leaks only (1 = check failed, an error thrown).
 */
export interface CheckResult {
  filename: string;
  format: string;
  'check-errors': number;
  corruptions?: number;
  leaks?: number;
  'corruptions-fixed'?: number;
  'leaks-fixed'?: number;
  'image-end-offset'?: number;
  'total-clusters'?: number;
  'allocated-clusters'?: number;
  'fragmented-clusters'?: number;
  'compressed-clusters'?: number;
  /** Lines qemu-img prints before the summary ("Leaked cluster 5 refcount=1 reference=0", "ERROR ..."). */
  messages: string[];
}

/** `qemu-img measure` input: a size, or a source device whose allocation is measured. */
export interface MeasureRequest {
  size?: number;
  source?: BlockDevice;
  options: Record<string, string>;
}

/** `qemu-img measure --output=json` keys. */
export interface MeasureResult {
  required: number;
  'fully-allocated': number;
  bitmaps?: number;
}

/**
 * One `-o` option of a format. `diskhub img` derives three outputs from the driver's list:
 * `-o help` (sorted by name, "  name=<type> - help"), the validation of `-o` values (unknown
 * key, size syntax, on/off), and `create`'s "Formatting 'f', fmt=... k=v ..." line, which walks
 * the list in its declared order printing each option that was given or has a `default`.
 * So: declare options in the order qemu-img prints them, and give `default` only to options
 * qemu-img prints without being asked (qcow2: cluster_size, extended_l2, compression_type,
 * lazy_refcounts, refcount_bits — not preallocation or compat). Host-file options (size,
 * nocow, preallocation, extent_size_hint) are added by the CLI after the format's own.
 */
export interface CreateOption {
  name: string;
  type: 'size' | 'number' | 'bool' | 'string';
  help: string;
  default?: string;
}

/** What `qemu-img amend` passes besides option values (used by LUKS key slot changes). */
export interface AmendContext {
  /** The passphrase of secret `id` (`--object secret,id=…`). */
  secret(id: string): Uint8Array;
  /** `--force`: allow the unsafe key slot changes QEMU refuses without it. */
  force: boolean;
}

export interface CreateRequest {
  /** Virtual size in bytes (may be omitted when a backing file gives it). */
  size: number;
  /** `-o` options as given (key → raw string value), validated by the driver. */
  options: Record<string, string>;
  backingFile?: string;
  backingFormat?: string;
  /** The passphrase for an encrypted image (the secret that key-secret / encrypt.key-secret names). */
  secret?: Uint8Array;
  /** Create (or truncate) a file the new image names, such as a qcow2 external data file; relative names resolve against the image's directory. */
  createRelated?: (filename: string) => Promise<ByteSource>;
  /** The format registry, for a driver that probes a file the new image names (a vmdk parent); createImage passes it. */
  formats?: FormatRegistry;
}

/** The registry of format drivers (formats.ts), as a driver that must probe another file receives it. */
export interface FormatRegistry {
  /** The driver of that name (DiskError EFORMAT when there is none). */
  get(name: string): FormatDriver;
  /** The driver that scores highest on the first bytes of a file (raw if none claims it). */
  probe(head: Uint8Array, filename?: string): FormatDriver;
  /** Every driver, in registration order. */
  list(): FormatDriver[];
}

export interface FormatDriver {
  readonly name: string;
  /**
   * The format's safety inspections (its folder's inspect.ts): what the image service runs on
   * an upload before trusting it. inspect/formats.ts lists them for the inspector.
   */
  readonly inspections?: readonly FormatInspection[];
  /**
   * How sure the driver is that `head` (the first bytes of the file, at least 512 when the
   * file is that long) is this format: 0 = no, 100 = certain. Raw answers 1.
   */
  probe(head: Uint8Array, filename?: string): number;
  open(source: ByteSource, options: OpenOptions): Promise<Image>;
  /** Options `qemu-img create -f NAME -o help` lists. */
  readonly createOptions?: readonly CreateOption[];
  /** Options `qemu-img amend -o help` lists (absent: the format cannot be amended). */
  readonly amendOptions?: readonly CreateOption[];
  /** Write a new, empty image into `target` (already created and empty). */
  create?(target: ByteSource, request: CreateRequest): Promise<void>;
  /** `qemu-img check` for this format (absent: "This image format does not support checks", exit 63). */
  check?(source: ByteSource, options: CheckOptions): Promise<CheckResult>;
  /** `qemu-img measure -O NAME`. */
  measure?(request: MeasureRequest): Promise<MeasureResult>;
}

/**
 * `encryption=on` is QEMU's old spelling of `encrypt.format=aes` (qcow, qcow2): giving both is
 * refused, before any file is created, with QEMU's message.
 */
export function checkEncryptionAlias(options: Record<string, string>): void {
  if (options.encryption !== undefined && options['encrypt.format'] !== undefined) {
    throw new DiskError('EINVAL', "'encrypt.format' and its alias 'encryption' can't be used at the same time");
  }
}
