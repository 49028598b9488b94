/**
 * The guest's serial console as QEMU writes it to a file, read as it grows, and what the boot
 * test looks for in it: the kernel starting, cloud-init's final line, the user cloud-init put
 * the metadata's key in, and the ways a boot dies (no boot disk, a kernel panic, an initramfs
 * or emergency shell).
 */
import { open, type FileHandle } from 'node:fs/promises';

/** Console text is kept up to this size (a chatty guest must not grow memory without bound). */
const MAX_KEPT = 4 << 20;

export class SerialConsole {
  private text = '';
  private readAt = 0;
  private dropped = 0;
  private constructor(private readonly file: FileHandle) {}

  static async open(path: string): Promise<SerialConsole> {
    return new SerialConsole(await open(path, 'r'));
  }

  /** Read what was written since the last call; returns the whole text so far (cleaned). */
  async poll(): Promise<string> {
    const chunk = Buffer.allocUnsafe(1 << 16);
    for (;;) {
      const { bytesRead } = await this.file.read(chunk, 0, chunk.length, this.readAt);
      if (bytesRead === 0) break;
      this.readAt += bytesRead;
      this.text += clean(chunk.subarray(0, bytesRead).toString('utf8'));
      if (this.text.length > MAX_KEPT) {
        // Keep the start (the kernel's and firmware's lines) and the newest half.
        const head = this.text.slice(0, MAX_KEPT / 4);
        const cut = this.text.length - MAX_KEPT / 2;
        this.dropped += cut - head.length;
        this.text = `${head}\n[... ${this.dropped} characters of console output left out ...]\n${this.text.slice(cut)}`;
      }
    }
    return this.text;
  }

  get current(): string { return this.text; }

  async close(): Promise<void> { await this.file.close(); }
}

/** Terminal escapes (colours, cursor moves), carriage returns and NULs out: plain lines. */
function clean(s: string): string {
  return s.replace(/\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\x1b[=>c]/g, '').replace(/\r/g, '').replace(/\0/g, '');
}

/** The last `count` lines of the console, or those around `at` (an index into the text). */
export function excerpt(text: string, count = 30, at?: number): string {
  const lines = (at === undefined ? text : text.slice(0, text.indexOf('\n', at) + 1 || text.length)).split('\n');
  while (lines.length && lines[lines.length - 1] === '') lines.pop();
  return lines.slice(-count).join('\n');
}

/** A boot that cannot go on: the first of these found ends the test with its reason. */
const FATAL: { pattern: RegExp; reason: string }[] = [
  { pattern: /Kernel panic - not syncing[^\n]*/, reason: 'kernel panic' },
  // SeaBIOS's messages when no disk can be booted.
  { pattern: /No bootable device[^\n]*|Boot failed: [^\n]*/, reason: 'the firmware found nothing to boot' },
  { pattern: /Gave up waiting for root file system device[^\n]*|ALERT! [^\n]* does not exist[^\n]*/, reason: 'the initramfs did not find the root filesystem' },
  { pattern: /You are in emergency mode[^\n]*|Give root password for maintenance[^\n]*/, reason: 'systemd emergency mode' },
];

export function fatalEvent(text: string): { reason: string; line: string; at: number } | undefined {
  let first: { reason: string; line: string; at: number } | undefined;
  for (const f of FATAL) {
    const m = f.pattern.exec(text);
    if (m && (!first || m.index < first.at)) first = { reason: f.reason, line: m[0].trim(), at: m.index };
  }
  return first;
}

/**
 * A login prompt with no cloud-init line before it: cloud-init's units run before
 * systemd-user-sessions.service, which the gettys wait for, and write to the console
 * (StandardOutput=journal+console), so in an image where cloud-init is installed and enabled
 * its "Cloud-init v. ... running 'init'" lines come first. Without them it did not run.
 */
export function loginWithoutCloudInit(text: string): string | undefined {
  const login = /^\S+ login: /m.exec(text);
  if (!login || /Cloud-init v\. \S+ running/.test(text.slice(0, login.index))) return undefined;
  return login[0].trim();
}

/** "Linux version 6.1.0-28-cloud-amd64 (...)": the kernel runs. */
export function kernelStarted(text: string): string | undefined {
  return /Linux version (\S+)/.exec(text)?.[1];
}

/**
 * cloud-init's last word (cc_final_message's default): "Cloud-init v. 22.4.2 finished at
 * <date>. Datasource DataSourceConfigDrive [net,ver=2][source=/dev/sr0].  Up 85.60 seconds".
 */
export function cloudInitFinished(text: string): { version: string; datasource: string; line: string } | undefined {
  const m = /Cloud-init v\. (\S+) finished at [^\n]*/.exec(text);
  if (!m) return undefined;
  return { version: m[1]!, datasource: /Datasource (\S+)/.exec(m[0])?.[1] ?? 'unknown', line: m[0].trim() };
}

/**
 * The user cloud-init gave the metadata's SSH key to, from cc_ssh_authkey_fingerprints' table
 * title ("Authorized keys from /home/debian/.ssh/authorized_keys for user debian"): the image's
 * default user, whatever the distribution calls it.
 */
export function keyUser(text: string): string | undefined {
  return /Authorized keys from \S+ for user ([a-z_][a-z0-9_.-]*)/i.exec(text)?.[1];
}
