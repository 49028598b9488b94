/** What the safety inspector reports (see inspect/index.ts). */

/** Why an image is unsafe to open on a server, or cannot be trusted to be what it says. */
export type IssueCode =
  | 'backing-file'      // names another image to read (qcow2/qed backing file)
  | 'data-file'         // qcow2 external data file
  | 'extents'           // vmdk descriptor naming extents (files) outside the image
  | 'create-type'       // a vmdk createType a service should not accept
  | 'parent'            // a differencing image (vhd, vhdx, vdi) that needs a parent
  | 'geometry'          // metadata that points outside the file, overlaps, or cannot be checked
  | 'unknown-features'  // feature bits the engine does not know, so cannot vouch for
  | 'malformed'         // the format's signature is there but its structures do not parse
  | 'ambiguous'         // the data parses as more than one format
  | 'format-mismatch';  // not the format it was declared as

export interface Issue {
  code: IssueCode;
  message: string;
}

/** One format whose signature matched, and what its inspection found. */
export interface FormatFinding {
  /** qemu-img's name for the format (raw, qcow2, vmdk, vpc, vhdx, vdi, qed, iso, ...). */
  format: string;
  virtualSize: number | null;
  /** vmdk createType, vpc fixed/dynamic/differencing, gpt/mbr for raw disks, ... */
  subformat?: string;
  /**
   * `start`: a signature at byte 0 that only this format has (the file IS this format).
   * `elsewhere`: recognised at another place (ISO 9660 at 32 KiB, GPT at 512, a trailer).
   */
  anchor: 'start' | 'elsewhere';
  issues: Issue[];
  details: Record<string, unknown>;
}

export interface InspectionReport {
  /** The format the data is (`raw` when nothing else matched). */
  format: string;
  virtualSize: number | null;
  /** Bytes of data inspected (the file or stream length). */
  actualSize: number;
  subformat?: string;
  /** Every format whose signature matched (more than one that claims the file: ambiguous). */
  detected: string[];
  details: Record<string, unknown>;
  issues: Issue[];
  /** No issues: safe to hand to a hypervisor as a standalone image of `format`. */
  safe: boolean;
}
