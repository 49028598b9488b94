/** `qemu-img info`, optionally for every image of a backing chain. */
import type { Image, ImageInfo } from '../format.js';
import { chainOf } from '../open.js';

/** The info of `image` and, with `chain`, of each image below it (top first). */
export async function infoChain(image: Image, chain = false): Promise<ImageInfo[]> {
  const images = chain ? chainOf(image) : [image];
  const out: ImageInfo[] = [];
  for (const img of images) out.push(await img.info());
  return out;
}
