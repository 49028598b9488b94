/**
 * glance-download: an image imported from another region's Glance (Glance 25's
 * api_image_import _ImportMetadata task and its glance_download plugin). The request names the
 * remote image (`glance_image_id`), its region (`glance_region`) and the endpoint interface
 * (`glance_service_interface`, default public); the task finds the region's image endpoint in
 * the Keystone catalog the user's token sees, reads the remote image's record with that token
 * (it must be active; its disk and container formats become the image's, and the properties
 * with Glance's [glance_download_properties] extra_properties prefixes are copied), then its
 * data, through the same URL filtering as web-download.
 *
 * As in Glance, the user's token is kept only by the API process that accepted the request
 * (never in the database): a task another node takes over fails, saying so.
 */
import { badRequest } from '../../http.js';
import { openWebSource, type ImportFilteringOptions, type WebSource } from './web-download.js';

/** Glance's [glance_download_properties] extra_properties default. */
export const GLANCE_DOWNLOAD_PROPERTY_PREFIXES = ['hw_', 'trait:', 'os_distro', 'os_secure_boot', 'os_type'];

/** The image endpoint for a region and interface in the user's catalog (null: none). */
export type ImageEndpointLookup = (token: string, region: string, iface: string) => Promise<string | null>;

/** The URL of the image service's `iface` endpoint in `region` (case-insensitive, as Glance's get_glance_endpoint) in a Keystone v3 catalog. */
export function findImageEndpoint(catalog: unknown[], region: string, iface: string): string | null {
  for (const service of catalog as { type?: string; endpoints?: { region?: string; region_id?: string; interface?: string; url?: string }[] }[]) {
    if (service?.type !== 'image') continue;
    for (const e of service.endpoints ?? []) {
      if ((e.region ?? e.region_id ?? '').toLowerCase() === region.toLowerCase() && e.interface === iface && e.url) return e.url;
    }
  }
  return null;
}

/** What Python's uuid.UUID() accepts: hyphens optional, braces or a urn:uuid: prefix. */
const UUID_LIKE = /^(urn:uuid:)?\{?[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}\}?$/i;

/** Glance's checks of a glance-download request (images.py import_image); the interface defaults to public in the request kept with the task. */
export function checkGlanceDownloadRequest(method: Record<string, unknown>): void {
  if (!('glance_region' in method)) throw badRequest("'glance_region' needs to be set for glance-download import method");
  if (!('glance_image_id' in method)) throw badRequest("'glance_image_id' needs to be set for glance-download import method");
  if (typeof method.glance_image_id !== 'string' || !UUID_LIKE.test(method.glance_image_id)) throw badRequest(`Remote image id does not look like a UUID: ${String(method.glance_image_id)}`);
  if (!('glance_service_interface' in method)) method.glance_service_interface = 'public';
}

/** The remote image: its record's formats, size and the properties to copy, and its data. */
export interface RemoteImage { diskFormat: string; containerFormat: string; size: number; properties: Record<string, string>; data: WebSource }

/** Find the endpoint, read the remote image's record, check it, and open its data (the user's token on both requests). */
export async function openRemoteImage(method: Record<string, unknown>, token: string, lookup: ImageEndpointLookup, filtering: ImportFilteringOptions, signal: AbortSignal): Promise<RemoteImage> {
  const region = String(method.glance_region);
  const iface = String(method.glance_service_interface ?? 'public');
  const imageId = String(method.glance_image_id);
  const endpoint = await lookup(token, region, iface);
  if (!endpoint) throw badRequest(`${iface} glance endpoint not found for region ${region}`);
  const base = endpoint.replace(/\/+$/, '');
  const headers = { 'X-Auth-Token': token };
  const meta = await openWebSource(`${base}/v2/images/${imageId}`, filtering, signal, { ...headers, Accept: 'application/json' });
  const record = await readJson(meta, 1 << 20);
  if (record.status !== 'active') throw badRequest(`Source image status should be active instead of ${String(record.status)}`);
  const size = Number(record.size);
  if (record.size === null || record.size === undefined || !Number.isSafeInteger(size) || size < 0) throw badRequest(`Size attribute of remote image ${imageId} could not be determined.`);
  const properties: Record<string, string> = {};
  for (const [key, value] of Object.entries(record)) {
    // (os_glance_ is Glance's reserved namespace: never copied)
    if (GLANCE_DOWNLOAD_PROPERTY_PREFIXES.some((p) => key.startsWith(p)) && !key.startsWith('os_glance') && typeof value === 'string') properties[key] = value;
  }
  const data = await openWebSource(`${base}/v2/images/${imageId}/file`, filtering, signal, headers);
  return { diskFormat: String(record.disk_format ?? ''), containerFormat: String(record.container_format ?? ''), size, properties, data };
}

async function readJson(source: WebSource, limit: number): Promise<Record<string, unknown>> {
  const parts: Buffer[] = [];
  let n = 0;
  for await (const chunk of source.body as AsyncIterable<Buffer>) {
    n += chunk.length;
    if (n > limit) { source.body.destroy(); throw badRequest(`The remote image record from ${source.url} is larger than ${limit} bytes.`); }
    parts.push(chunk);
  }
  try {
    const v = JSON.parse(Buffer.concat(parts).toString('utf8')) as unknown;
    if (v && typeof v === 'object' && !Array.isArray(v)) return v as Record<string, unknown>;
  } catch { /* below */ }
  throw badRequest(`The remote image record from ${source.url} is not a JSON object.`);
}
