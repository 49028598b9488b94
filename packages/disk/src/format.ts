/**
 * Format drivers: one folder per format (raw/, qcow2/, ...). A driver probes bytes, opens a
 * ByteSource as an Image (a BlockDevice that also describes itself), and creates new images.
 * The registry in formats.ts lists them; nothing else needs to know which formats exist.
 */
import type { BlockDevice } from './blockdev.js';
import type { ByteSource } from './source.js';

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

export interface OpenOptions {
  /** Open for writing. */
  writable?: boolean;
  /** Allow opening an image that names an external data file (qcow2 data_file, vmdk extents outside the descriptor's folder). */
  allowExternalData?: boolean;
  /** Open this internal snapshot's view (read-only). */
  snapshot?: string;
  /** Resolve a file name relative to the image (for external data files and extents). */
  openRelated?: (filename: string, writable: boolean) => Promise<ByteSource>;
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
}

export interface CreateOption {
  name: string;
  type: 'size' | 'number' | 'bool' | 'string';
  help: string;
  default?: string;
}

export interface CreateRequest {
  /** Virtual size in bytes (may be omitted when a backing file gives it). */
  size: number;
  /** `-o` options as given (key → raw string value), validated by the driver. */
  options: Record<string, string>;
  backingFile?: string;
  backingFormat?: string;
}

export interface FormatDriver {
  readonly name: string;
  /**
   * How sure the driver is that `head` (the first bytes of the file, at least 512 when the
   * file is that long) is this format: 0 = no, 100 = certain. Raw answers 1.
   */
  probe(head: Uint8Array, filename?: string): number;
  open(source: ByteSource, options: OpenOptions): Promise<Image>;
  /** Options `qemu-img create -f NAME -o help` lists. */
  readonly createOptions?: readonly CreateOption[];
  /** Write a new, empty image into `target` (already created and empty). */
  create?(target: ByteSource, request: CreateRequest): Promise<void>;
}
