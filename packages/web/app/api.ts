/**
 * The dashboard's only way to the service: the public Identity v3 and Images v2 APIs (plus the
 * documented diskhub extensions), as any other client uses them. A token lives in
 * sessionStorage (gone with the tab); a 401 from any call means it expired or was revoked,
 * and the app sends the user to log in and back to where they were.
 */

export interface Project { id: string; name: string }

export interface Session {
  token: string;
  expiresAt: string;
  user: { id: string; name: string };
  project: Project;
  roles: string[];
}

export class ApiError extends Error {
  constructor(readonly status: number, message: string, readonly detail = '') {
    super(message);
  }
}

const SESSION_KEY = 'diskhub.session';
let expiredHandler: (() => void) | null = null;

/** Called when the service answers 401: the session is over. */
export function onSessionExpired(handler: () => void): void {
  expiredHandler = handler;
}

/** The session calls are made with: the one last loaded or saved. */
let current: Session | null = null;

export function loadSession(): Session | null {
  try {
    const s = JSON.parse(sessionStorage.getItem(SESSION_KEY) ?? 'null') as Session | null;
    current = s && Date.parse(s.expiresAt) > Date.now() ? s : null;
  } catch {
    current = null;
  }
  return current;
}

export function saveSession(s: Session | null): void {
  current = s;
  if (s) sessionStorage.setItem(SESSION_KEY, JSON.stringify(s));
  else sessionStorage.removeItem(SESSION_KEY);
}

export const isAdmin = (s: Session) => s.roles.includes('admin');

/** The message an OpenStack error body carries (Glance's webob JSON, Keystone's {"error": ...}). */
function messageOf(text: string): string {
  try {
    const j = JSON.parse(text) as { message?: string; error?: { message?: string } };
    return j.error?.message ?? j.message ?? '';
  } catch {
    // An HTML or plain-text error page: its text without the markup and the status line.
    return text.replace(/<[^>]+>/g, ' ').replace(/^\s*\d{3} [A-Za-z ]+/, '').replace(/\s+/g, ' ').trim();
  }
}

async function failure(r: Response): Promise<ApiError> {
  const text = await r.text().catch(() => '');
  return new ApiError(r.status, messageOf(text) || r.statusText, text);
}

export interface RequestOptions {
  body?: unknown;
  /** Content type of `body` (default JSON). */
  type?: string;
  signal?: AbortSignal;
}

/** One authenticated API call; JSON in and out (undefined for empty answers). */
export async function call<T = unknown>(method: string, path: string, opts: RequestOptions = {}): Promise<T> {
  const headers: Record<string, string> = { Accept: 'application/json' };
  if (current) headers['X-Auth-Token'] = current.token;
  let body: string | undefined;
  if (opts.body !== undefined) {
    headers['Content-Type'] = opts.type ?? 'application/json';
    body = JSON.stringify(opts.body);
  }
  let r: Response;
  try {
    r = await fetch(path, { method, headers, body, signal: opts.signal });
  } catch (e) {
    if ((e as Error).name === 'AbortError') throw e;
    throw new ApiError(0, (e as Error).message);
  }
  if (r.status === 401 && current) {
    expiredHandler?.();
    throw await failure(r);
  }
  if (!r.ok) throw await failure(r);
  const text = await r.text();
  return (text ? JSON.parse(text) : undefined) as T;
}

// ---------------------------------------------------------------- identity

interface TokenBody {
  token: { expires_at: string; user: { id: string; name: string }; project?: Project; roles?: { name: string }[] };
}

async function issue(auth: unknown): Promise<{ token: string; body: TokenBody }> {
  const r = await fetch('/identity/v3/auth/tokens?nocatalog', {
    method: 'POST', headers: { 'Content-Type': 'application/json', Accept: 'application/json' }, body: JSON.stringify({ auth }),
  }).catch((e: Error) => { throw new ApiError(0, e.message); });
  if (r.status !== 201) throw await failure(r);
  return { token: r.headers.get('X-Subject-Token') ?? '', body: (await r.json()) as TokenBody };
}

function sessionOf(token: string, body: TokenBody): Session {
  const t = body.token;
  if (!t.project) throw new ApiError(401, 'The token has no project scope.');
  return { token, expiresAt: t.expires_at, user: t.user, project: t.project, roles: (t.roles ?? []).map((r) => r.name) };
}

async function projectsFor(token: string): Promise<Project[]> {
  const r = await fetch('/identity/v3/auth/projects', { headers: { 'X-Auth-Token': token, Accept: 'application/json' } });
  if (!r.ok) throw await failure(r);
  return ((await r.json()) as { projects: Project[] }).projects;
}

/** Log in with a password; without a project name, the first project the user has a role on. */
export async function login(user: string, password: string, project: string, domain = 'Default'): Promise<Session> {
  const identity = { methods: ['password'], password: { user: { name: user, domain: { name: domain }, password } } };
  if (project) {
    const { token, body } = await issue({ identity, scope: { project: { name: project, domain: { name: domain } } } });
    return sessionOf(token, body);
  }
  const unscoped = await issue({ identity });
  const projects = await projectsFor(unscoped.token);
  if (!projects.length) throw new ApiError(401, 'The user has no role on any project.');
  return rescope(unscoped.token, projects[0]!.id);
}

/** A token for another project of the same user, from the current token. */
export async function rescope(token: string, projectId: string): Promise<Session> {
  const { token: t, body } = await issue({ identity: { methods: ['token'], token: { id: token } }, scope: { project: { id: projectId } } });
  return sessionOf(t, body);
}

export function myProjects(s: Session): Promise<Project[]> {
  return projectsFor(s.token);
}

export async function logout(s: Session): Promise<void> {
  await fetch('/identity/v3/auth/tokens', { method: 'DELETE', headers: { 'X-Auth-Token': s.token, 'X-Subject-Token': s.token } }).catch(() => {});
}

/** Every project (admins only: others get an empty list and type IDs). */
export async function allProjects(): Promise<Project[]> {
  try {
    return (await call<{ projects: Project[] }>('GET', '/identity/v3/projects')).projects;
  } catch {
    return [];
  }
}

// ---------------------------------------------------------------- images

export interface Image {
  id: string;
  name: string | null;
  status: string;
  visibility: string;
  protected: boolean;
  os_hidden: boolean;
  disk_format: string | null;
  container_format: string | null;
  size: number | null;
  virtual_size: number | null;
  checksum: string | null;
  os_hash_algo: string | null;
  os_hash_value: string | null;
  min_disk: number;
  min_ram: number;
  owner: string | null;
  created_at: string;
  updated_at: string;
  tags: string[];
  [property: string]: unknown;
}

/** What the image schema (GET /v2/schemas/image) tells a client: the attributes and allowed formats. */
export interface ImageSchemaInfo {
  /** The image's own attributes (not custom properties). */
  attributes: Set<string>;
  diskFormats: string[];
  containerFormats: string[];
}

export async function imageSchemaInfo(): Promise<ImageSchemaInfo> {
  const schema = await call<{ properties: Record<string, { enum?: (string | null)[]; is_base?: boolean }> }>('GET', '/v2/schemas/image');
  const formats = (k: string) => (schema.properties[k]?.enum ?? []).filter((v): v is string => typeof v === 'string');
  // Properties the schema marks is_base: false (os_distro, architecture, ...) are custom properties it documents.
  const attributes = new Set(Object.entries(schema.properties).filter(([, p]) => p.is_base !== false).map(([k]) => k));
  return { attributes, diskFormats: formats('disk_format'), containerFormats: formats('container_format') };
}

/**
 * Keys no client may set as a property: the schema's attributes and the names Glance reserves
 * without listing them in the schema (it answers 403 for those).
 */
export function isReservedKey(key: string, schema: ImageSchemaInfo): boolean {
  return schema.attributes.has(key) || key.startsWith('os_glance') || ['deleted', 'deleted_at', 'location', 'owner_id', 'is_public'].includes(key);
}

export interface ImagePage { images: Image[]; next?: string }

export const listImages = (query: URLSearchParams, signal?: AbortSignal) => call<ImagePage>('GET', `/v2/images?${query}`, { signal });
export const getImage = (id: string) => call<Image>('GET', `/v2/images/${encodeURIComponent(id)}`);
export const createImage = (body: Record<string, unknown>) => call<Image>('POST', '/v2/images', { body });
export const deleteImage = (id: string) => call('DELETE', `/v2/images/${encodeURIComponent(id)}`);
export const imageAction = (id: string, action: 'deactivate' | 'reactivate') => call('POST', `/v2/images/${encodeURIComponent(id)}/actions/${action}`);

export type PatchOp = { op: 'add' | 'replace' | 'remove'; path: string; value?: unknown };
export const patchImage = (id: string, ops: PatchOp[]) =>
  call<Image>('PATCH', `/v2/images/${encodeURIComponent(id)}`, { body: ops, type: 'application/openstack-images-v2.1-json-patch' });

export interface Member { member_id: string; image_id: string; status: string; created_at: string; updated_at: string }
export const listMembers = (id: string) => call<{ members: Member[] }>('GET', `/v2/images/${encodeURIComponent(id)}/members`).then((r) => r.members);
export const addMember = (id: string, member: string) => call<Member>('POST', `/v2/images/${encodeURIComponent(id)}/members`, { body: { member } });
export const removeMember = (id: string, member: string) => call('DELETE', `/v2/images/${encodeURIComponent(id)}/members/${encodeURIComponent(member)}`);
export const setMemberStatus = (id: string, member: string, status: 'accepted' | 'rejected' | 'pending') =>
  call<Member>('PUT', `/v2/images/${encodeURIComponent(id)}/members/${encodeURIComponent(member)}`, { body: { status } });

/** The diskhub extension GET /v2/images/{id}/x-diskhub/inside (see the service's inside.ts). */
export interface Inside {
  format: string;
  virtual_size: number | null;
  inspection: { format: string; safe: boolean; detected: string[]; subformat?: string; issues: { code: string; message: string }[] };
  allocation: { legend: string[]; bucket_size: number; buckets: number[][]; totals: Record<string, number> } | null;
  allocation_unavailable?: string;
  partitions: {
    table: string | null;
    entries: { number: number; start: number; size: number; kind: string; type: string; type_name?: string; name?: string; filesystem: Filesystem | null }[];
    filesystem?: Filesystem | null;
  } | null;
  /** Operating systems found (empty: none), or null with the reason in operating_systems_unavailable. */
  operating_systems: OperatingSystem[] | null;
  operating_systems_unavailable?: string;
  computed_at: string;
}
export type LintResult = 'pass' | 'fail' | 'n/a';
export interface OperatingSystem {
  root: string; name: string; arch: string | null; distro: string | null; product_name: string | null;
  major_version: number; minor_version: number; hostname: string | null;
  package_format: string | null; package_management: string | null; application_count: number | null;
  kernels: { version: string; path: string; initramfs: string | null }[];
  bootloader: { type: string | null; config: string | null; entries: { title: string | null; kernel: string; cmdline: string }[] } | null;
  cloud_init: { config_files: string[]; datasource_list: string[] | null; datasource_list_from: string | null } | null;
  users: { name: string; uid: number; shell: string; password: string }[];
  notes: string[];
  lint: { checks: { id: string; title: string; result: LintResult; evidence: string[] }[]; summary: { pass: number; fail: number; na: number } } | null;
}
export interface Filesystem { type: string; label?: string; uuid?: string; size?: number }
export const getInside = (id: string, buckets: number) => call<Inside>('GET', `/v2/images/${encodeURIComponent(id)}/x-diskhub/inside?buckets=${buckets}`);

// ---------------------------------------------------------------- stores and import

/** One store of GET /v2/info/stores (Glance's multi-store discovery). */
export interface StoreInfo { id: string; description?: string; default: boolean }

export async function listStores(): Promise<StoreInfo[]> {
  const r = await call<{ stores: { id: string; description?: string; default?: string | boolean }[] }>('GET', '/v2/info/stores');
  // Glance sends "default": "true" (a string) on the default store only.
  return r.stores.map((s) => ({ id: s.id, description: s.description, default: s.default === true || s.default === 'true' }));
}

/** The import methods the service has enabled (GET /v2/info/import). */
export const importMethods = () => call<{ 'import-methods': { value: string[] } }>('GET', '/v2/info/import').then((r) => r['import-methods'].value);

/**
 * An import request as Glance's API takes it: the method, and with several stores the stores to
 * import into (all of them unless `all_stores_must_succeed` is false, when the image keeps the
 * stores that worked).
 */
export interface ImportRequest {
  method: { name: 'web-download'; uri: string } | { name: 'copy-image' } | { name: string; uri?: string };
  stores?: string[];
  all_stores_must_succeed?: boolean;
}

/** Interoperable image import: POST /v2/images/{id}/import (202; the work runs as a task). */
export const importImage = (id: string, body: ImportRequest) =>
  call('POST', `/v2/images/${encodeURIComponent(id)}/import`, { body });

/** A task as GET /v2/images/{id}/tasks lists it (the database's row, as Glance shows it). */
export interface ImageTask {
  id: string;
  type: string;
  status: 'pending' | 'processing' | 'success' | 'failure';
  message: string;
  created_at: string;
  updated_at: string;
  input: { import_req?: { method?: { name?: string; uri?: string } } } | null;
  result: Record<string, unknown> | null;
}
export const imageTasks = (id: string) => call<{ tasks: ImageTask[] }>('GET', `/v2/images/${encodeURIComponent(id)}/tasks`).then((r) => r.tasks);

// ---------------------------------------------------------------- metadata definitions

export interface PropertyDef { title: string; description?: string; type: string; enum?: string[]; minimum?: number; maximum?: number; readonly?: boolean }
export interface NamespaceSummary { namespace: string; display_name?: string }

/** Every property the metadefs API defines for images, by key (prefix applied). */
export async function imagePropertyDefs(): Promise<Map<string, PropertyDef & { namespace: string }>> {
  const out = new Map<string, PropertyDef & { namespace: string }>();
  const { namespaces } = await call<{ namespaces: NamespaceSummary[] }>('GET', '/v2/metadefs/namespaces?resource_types=OS::Glance::Image');
  const details = await Promise.all(namespaces.map((n) =>
    call<{ namespace: string; display_name?: string; properties?: Record<string, PropertyDef>; resource_type_associations?: { name: string; prefix?: string }[] }>('GET', `/v2/metadefs/namespaces/${encodeURIComponent(n.namespace)}`)));
  for (const ns of details) {
    const prefix = ns.resource_type_associations?.find((r) => r.name === 'OS::Glance::Image')?.prefix ?? '';
    for (const [key, def] of Object.entries(ns.properties ?? {})) out.set(prefix + key, { ...def, namespace: ns.display_name ?? ns.namespace });
  }
  return out;
}

// ---------------------------------------------------------------- image data

export interface Progress { loaded: number; total: number }

/**
 * Upload a file as the image's data with progress events. XMLHttpRequest, because it is what
 * reports upload progress in every browser; abort() cancels the transfer.
 */
export function uploadData(id: string, file: Blob, onProgress: (p: Progress) => void, store?: string): { done: Promise<void>; abort(): void } {
  const xhr = new XMLHttpRequest();
  const done = new Promise<void>((resolve, reject) => {
    xhr.open('PUT', `/v2/images/${encodeURIComponent(id)}/file`);
    xhr.setRequestHeader('Content-Type', 'application/octet-stream');
    xhr.setRequestHeader('Accept', 'application/json');
    if (current) xhr.setRequestHeader('X-Auth-Token', current.token);
    // Glance's multi-store upload: the store the data goes to (without it, the default store).
    if (store) xhr.setRequestHeader('X-Image-Meta-Store', store);
    xhr.upload.onprogress = (e) => onProgress({ loaded: e.loaded, total: e.lengthComputable ? e.total : file.size });
    xhr.onload = () => {
      if (xhr.status >= 200 && xhr.status < 300) { onProgress({ loaded: file.size, total: file.size }); resolve(); return; }
      if (xhr.status === 401) expiredHandler?.();
      reject(new ApiError(xhr.status, messageOf(xhr.responseText) || xhr.statusText, xhr.responseText));
    };
    xhr.onerror = () => reject(new ApiError(0, 'network error'));
    xhr.onabort = () => reject(new DOMException('Upload cancelled', 'AbortError'));
    xhr.send(file);
  });
  return { done, abort: () => xhr.abort() };
}

/**
 * A short-lived signed URL for the image's data (the x-diskhub/download-url extension): the
 * browser's own download manager fetches it and streams it to disk, whatever the size.
 */
export const downloadUrl = (id: string) => call<{ url: string; expires_at: string }>('POST', `/v2/images/${encodeURIComponent(id)}/x-diskhub/download-url`);
