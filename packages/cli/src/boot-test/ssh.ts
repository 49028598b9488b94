/**
 * The SSH side of the boot test, with OpenSSH's own client: a fresh ed25519 key pair per run
 * (ssh-keygen, in the run's temporary directory), and commands run in the guest non-interactively
 * (BatchMode: a refused key fails instead of asking for a password). The guest is new on every
 * run, so its host key is neither checked nor remembered.
 */
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';

export interface SshKey {
  privateKey: string;
  publicKey: string;
}

export async function generateKey(dir: string, signal?: AbortSignal): Promise<SshKey> {
  const privateKey = join(dir, 'id_ed25519');
  await runTool('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'diskhub-boot-test', '-f', privateKey], 30_000, signal);
  return { privateKey, publicKey: (await readFile(`${privateKey}.pub`, 'utf8')).trim() };
}

export interface SshTarget {
  port: number;
  user: string;
  key: SshKey;
}

export interface SshResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Run `command` in the guest (as `user`, through the forwarded loopback port). */
export function sshRun(target: SshTarget, command: string, timeoutMs: number, signal?: AbortSignal): Promise<SshResult> {
  return runTool('ssh', [
    '-p', String(target.port),
    '-i', target.key.privateKey,
    '-o', 'BatchMode=yes',
    '-o', 'IdentitiesOnly=yes',
    '-o', 'StrictHostKeyChecking=no',
    '-o', 'UserKnownHostsFile=/dev/null',
    '-o', 'GlobalKnownHostsFile=/dev/null',
    '-o', 'LogLevel=ERROR',
    '-o', 'ConnectTimeout=20',
    '-F', '/dev/null', // the operator's ~/.ssh/config must not change what is tested
    `${target.user}@127.0.0.1`,
    command,
  ], timeoutMs, signal);
}

/** Run a tool; never throws for its exit status (a missing tool or a timeout do throw). */
function runTool(cmd: string, args: string[], timeoutMs: number, signal?: AbortSignal): Promise<SshResult> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 16 << 20, encoding: 'utf8', ...(signal ? { signal } : {}) }, (error, stdout, stderr) => {
      if (!error) { resolve({ code: 0, stdout, stderr }); return; }
      const e = error as NodeJS.ErrnoException & { code?: number | string; killed?: boolean };
      if (typeof e.code === 'number') { resolve({ code: e.code, stdout, stderr }); return; }
      if (e.killed) { resolve({ code: null, stdout, stderr: `${stderr}${cmd} did not finish within ${timeoutMs / 1000} s` }); return; }
      reject(new Error(e.code === 'ENOENT' ? `${cmd} is not installed (Debian: openssh-client)` : `${cmd}: ${e.message}`));
    });
  });
}
