/** What a partition table reader reports: the table, its partitions, and what looked wrong. */

export interface Partition {
  /**
   * The number Linux gives it (sda<N>, qemu-nbd --partition N): MBR primaries 1-4 by slot,
   * logical partitions 5, 6, ... in chain order; GPT entry index + 1.
   */
  number: number;
  /** Byte offset of the first byte on the disk. */
  start: number;
  /** Length in bytes. */
  size: number;
  /** First sector and sector count, in the table's sector size. */
  startSector: number;
  sectors: number;
  kind: 'primary' | 'extended' | 'logical' | 'gpt';
  /** MBR: the type byte in hex as sfdisk prints it ("83", "5"); GPT: the type GUID. */
  type: string;
  /** Human name of the type, as fdisk prints it, when known. */
  typeName?: string;
  /** GPT partition name (UTF-16LE in the entry). */
  name?: string;
  /** GPT unique partition GUID; MBR: the PARTUUID blkid derives ("<disk id>-<nn>"). */
  uuid?: string;
  /** MBR: the boot indicator is 0x80. */
  bootable?: boolean;
  /** GPT attribute bits, named as sfdisk names them ("RequiredPartition LegacyBIOSBootable GUID:60"). */
  attributes?: string;
  /** Some of it lies past the end of the disk: listed, but not openable. */
  beyondDisk?: boolean;
}

export interface GptDetails {
  /** Which header the partitions were read from: the backup is used when the primary is corrupt. */
  header: 'primary' | 'backup';
  /** LBA of the header that was used, and of the other copy it names. */
  headerLba: number;
  alternateLba: number;
  firstUsableLba: number;
  lastUsableLba: number;
  entriesLba: number;
  entryCount: number;
  entrySize: number;
}

export interface PartitionTable {
  /** "dos" and "gpt", as sfdisk and blkid's PTTYPE name them. */
  type: 'dos' | 'gpt';
  sectorSize: number;
  /** MBR disk signature as "0x1234abcd"; GPT disk GUID. */
  id: string;
  partitions: Partition[];
  /** Things wrong with the table that did not stop it being read (loops, overlaps, bad backup header, ...). */
  warnings: string[];
  gpt?: GptDetails;
}
