/** `diskhub img`: qemu-img's command line over the disk engine. */
import { openImage, closeChain, isDiskError } from '@diskhub/disk';

export async function imgMain(argv: string[]): Promise<number> {
  const [cmd, ...args] = argv;
  try {
    switch (cmd) {
      case 'info': {
        const file = args.filter((a) => !a.startsWith('-')).pop();
        if (!file) throw new Error('Expecting one image file name');
        const img = await openImage(file, { backing: false });
        try {
          process.stdout.write(JSON.stringify(await img.info(), null, 4) + '\n');
        } finally {
          await closeChain(img);
        }
        return 0;
      }
      default:
        process.stderr.write(`qemu-img: Command not found: ${cmd}\n`);
        return 1;
    }
  } catch (e) {
    process.stderr.write(`qemu-img: ${isDiskError(e) || e instanceof Error ? e.message : String(e)}\n`);
    return 1;
  }
}
