/**
 * `diskhub` — one command for the whole stack. Subcommands:
 *   img   qemu-img compatible disk image tool
 *   serve the image service (Glance v2 / Keystone v3 compatible)
 */
import { imgMain } from './img/main.js';
import { serveMain } from '@diskhub/service/main';

const USAGE = `usage: diskhub <command> [arguments]

commands:
  img     disk image tool, a drop-in for qemu-img (diskhub img --help)
  serve   the image service: Glance Image API v2 + Keystone v3 (diskhub serve --help)
`;

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case 'img':
      return imgMain(rest);
    case 'serve':
      return serveMain(rest);
    case undefined:
    case '-h':
    case '--help':
    case 'help':
      process.stdout.write(USAGE);
      return cmd === undefined ? 1 : 0;
    default:
      process.stderr.write(`diskhub: unknown command '${cmd}'\n${USAGE}`);
      return 1;
  }
}
