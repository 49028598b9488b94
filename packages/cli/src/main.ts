/**
 * `diskhub` — one command for the whole stack. Subcommands:
 *   img   qemu-img compatible disk image tool
 *   serve the image service (Glance v2 / Keystone v3 compatible)
 */
// Subcommands are loaded on demand: `diskhub img` must not pay for loading the service's
// HTTP server and database drivers (hundreds of milliseconds per invocation).

const USAGE = `usage: diskhub <command> [arguments]

commands:
  img     disk image tool, a drop-in for qemu-img (diskhub img --help)
  build   build a bootable cloud image from a recipe (diskhub build --help)
  compute a compute node's instance disks from the image service (diskhub compute --help)
  nbd     serve an image over NBD, like qemu-nbd (diskhub nbd --help)
  serve   the image service: Glance Image API v2 + Keystone v3 (diskhub serve --help)
`;

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case 'img':
      return (await import('./img/main.js')).imgMain(rest);
    case 'build':
      return (await import('./image-build/main.js')).buildMain(rest);
    case 'compute':
      return (await import('./compute/main.js')).computeMain(rest);
    case 'nbd':
      return (await import('./nbd/main.js')).nbdMain(rest);
    case 'serve':
      return (await import('@diskhub/service/main')).serveMain(rest);
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
