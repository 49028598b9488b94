/**
 * Where the tested image comes from: a file (used in place, read-only, as the overlay's
 * backing file), an http(s) URL (downloaded into the run's directory), or an image id in the
 * image service (downloaded as a compute node fetches it: verified against the image's hash
 * and inspected, compute/images.ts). Downloaded images pass the engine's safety inspection
 * before QEMU sees them: a qcow2 naming a backing or data file on this machine is refused.
 */
import { createWriteStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { closeChain, describeIssues, inspectFile } from '@diskhub/disk';
import { openCliImage, CliError } from '../img/common.js';
import { authFromEnv, ImageServiceClient, type AuthSettings } from '../compute/client.js';
import { fetchToRaw } from '../compute/images.js';

export interface TestedImage {
  /** Absolute path QEMU opens (read-only, as the overlay's backing file). */
  path: string;
  format: string;
  virtualSize: number;
  /** How the operator named it. */
  display: string;
  origin: 'file' | 'url' | 'image-service';
}

/** Glance image ids are UUIDs (any case, with or without dashes, as oslo's is_uuid_like). */
const IMAGE_ID = /^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$/i;

export async function resolveImage(arg: string, workDir: string, auth: AuthSettings, signal: AbortSignal): Promise<TestedImage> {
  if (/^https?:\/\//i.test(arg)) return fromUrl(arg, join(workDir, 'downloaded'), signal);
  const isFile = await stat(arg).then((s) => s.isFile() || s.isBlockDevice(), () => false);
  if (!isFile && IMAGE_ID.test(arg)) return fromImageService(arg, join(workDir, 'downloaded'), auth, signal);
  return describe(resolve(arg), arg, 'file');
}

/** The format and size the engine finds (the whole backing chain is opened, so it must exist). */
async function describe(path: string, display: string, origin: TestedImage['origin']): Promise<TestedImage> {
  const image = await openCliImage(path, {}, display);
  try {
    return { path, format: image.format, virtualSize: image.size, display, origin };
  } finally {
    await closeChain(image);
  }
}

async function fromUrl(url: string, target: string, signal: AbortSignal): Promise<TestedImage> {
  let response: Response;
  try {
    response = await fetch(url, { signal });
  } catch (e) {
    if (signal.aborted) throw e;
    throw new CliError(`cannot download '${url}': ${(e as { cause?: Error }).cause?.message ?? (e as Error).message}`);
  }
  if (!response.ok || !response.body) throw new CliError(`cannot download '${url}': HTTP ${response.status}`);
  await pipeline(Readable.fromWeb(response.body as import('node:stream/web').ReadableStream), createWriteStream(target, { flags: 'wx' }), { signal });
  const report = await inspectFile(target);
  if (!report.safe) throw new CliError(`the image at '${url}' does not pass the safety inspection: ${describeIssues(report)}`);
  return describe(target, url, 'url');
}

async function fromImageService(id: string, target: string, auth: AuthSettings, signal: AbortSignal): Promise<TestedImage> {
  const client = await ImageServiceClient.connect(authFromEnv(process.env, auth), signal);
  const record = await client.getImage(id);
  await fetchToRaw(client, record, target, { forceRaw: false, signal });
  return describe(target, `image ${id}`, 'image-service');
}
