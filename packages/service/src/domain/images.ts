/**
 * The image domain: what may be done to images, tags and members, by whom (the policy's
 * named rules, as Glance's api/v2/policy.py asks them), and the rules an image's record
 * keeps (quotas, property limits, the status table). HTTP-free: routes hand in validated
 * values and the caller; the repository does the SQL.
 */
import { randomUUID } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { HttpError, badRequest, conflict, forbidden, notFound } from '../http.js';
import { now, type AuthContext } from '../identity.js';
import { BASE_ATTRS, MAX_PROPERTIES, apiTime, checkLimits, type ImageRecord } from '../images-model.js';
import { ImageApiPolicy, MemberApiPolicy, type Policy, type PolicyCredentials, type PolicyImage } from '../policy/index.js';
import { num } from '../db/schema.js';
import type { ImageRepo, ListResult } from '../repo/images.js';
import type { ImageMembersTable, ImagesTable } from '../db/schema.js';
import type { StoreSet } from '../stores/registry.js';
import { ImageLocations, type LocationOptions } from './locations.js';
import { PolicyNotAuthorized } from '../policy/index.js';
import type { Logger } from '../log.js';
import { assertTransition, canTransition } from './status.js';
import { otherStageHost, proxyToStageHost } from './import/stage-host.js';

export interface ImageLimits extends LocationOptions {
  /** Images a project may own; 0 = unlimited. */
  projectImageQuota: number;
  /** The image data's staging directory (removed with the image). */
  stagingDir: string;
  /** Glance's delayed_delete: an image with data becomes pending_delete and a scrubber removes the data later. */
  delayedDelete?: boolean;
  /** This node's worker_self_reference_url: an image staged on another node is deleted there (its staged data with it). */
  stageHost?: () => string | undefined;
}

/** One change of a JSON-patch request, its pointer already resolved to an attribute name. */
export interface ImageChange {
  op: 'add' | 'replace' | 'remove'; key: string; path: string; value?: unknown; hasValue: boolean;
  /** The pointer's second segment (`/locations/1`, `/locations/-`), only the locations list has one. */
  position?: string;
}

export const MAX_MEMBERS = 128;
export const MAX_TAGS_PER_IMAGE = 128;
export const MEMBER_STATUSES = ['pending', 'accepted', 'rejected'];

/** The caller as the policy sees it. */
export function credentials(a: AuthContext): PolicyCredentials {
  return { user_id: a.userId, project_id: a.projectId, domain_id: a.domainScope, roles: [...a.roleNames], is_admin: a.isAdmin };
}

export class ImageService {
  /** The image's locations: the locations API, and its data's removal. */
  readonly locations: ImageLocations;

  constructor(
    readonly repo: ImageRepo,
    stores: StoreSet,
    private readonly policy: Policy,
    private readonly limits: ImageLimits,
    private readonly log: Logger,
  ) {
    this.locations = new ImageLocations(this, repo, stores, limits, log);
  }

  /** Whether `a` may see the image's locations (Glance shows none when get_image_location refuses). */
  locationsVisible(a: AuthContext, img: ImageRecord): boolean {
    try {
      this.imagePolicy(a, img).getImageLocation();
      return true;
    } catch (e) {
      if (e instanceof PolicyNotAuthorized || e instanceof HttpError) return false;
      throw e;
    }
  }

  /** The policy's checks of `a` on `img` (or on a proposed image for create and list). */
  imagePolicy(a: AuthContext, img: ImageRecord | { owner?: string | null; visibility?: string }): ImageApiPolicy {
    return new ImageApiPolicy(this.policy, credentials(a), 'id' in img ? policyImage(img) : img);
  }

  /** An image the caller may see and get (404 otherwise: what it may not see does not exist for it). */
  async get(a: AuthContext, id: string): Promise<ImageRecord> {
    const img = await this.repo.load(id);
    if (!img || !(await this.repo.canSee(a, img))) throw notFound(`No image found with ID ${id}`);
    this.imagePolicy(a, img).getImage();
    return img;
  }

  async list(a: AuthContext, sp: URLSearchParams, limit: number): Promise<{ images: ImageRecord[]; more: boolean; last: string | undefined }> {
    this.imagePolicy(a, { owner: a.projectId }).getImages();
    const { rows, more }: ListResult = await this.repo.list(a, sp, limit);
    return { images: await this.repo.hydrate(rows), more, last: rows[rows.length - 1]?.id };
  }

  /** A new queued image from a create request's attributes (writable, and valid against the image schema: the route checked). */
  async create(a: AuthContext, body: Record<string, unknown>): Promise<ImageRecord> {
    for (const [key, v] of Object.entries(body)) checkLimits(key, v);
    const owner = body.owner === undefined ? a.projectId : (body.owner as string | null);
    const visibility = (body.visibility as string | undefined) ?? 'shared';
    this.imagePolicy(a, { owner, visibility }).addImage();
    if (this.limits.projectImageQuota && a.projectId && await this.repo.countOwned(a.projectId) >= this.limits.projectImageQuota) {
      throw new HttpError(413, `Maximum number of images exceeded: the project may have ${this.limits.projectImageQuota} images.`);
    }
    const props = extraProperties(body);
    const id = (body.id as string | undefined)?.toLowerCase() ?? randomUUID();
    const ts = now();
    const row: ImagesTable = {
      id, name: (body.name as string | null | undefined) ?? null, disk_format: (body.disk_format as string | null | undefined) ?? null,
      container_format: (body.container_format as string | null | undefined) ?? null, size: null, virtual_size: null,
      status: 'queued', visibility, protected: body.protected ? 1 : 0, os_hidden: body.os_hidden ? 1 : 0,
      checksum: null, os_hash_algo: null, os_hash_value: null, min_disk: (body.min_disk as number | undefined) ?? 0,
      min_ram: (body.min_ram as number | undefined) ?? 0, owner,
      created_at: ts, updated_at: ts, revision: 0, deleted: 0, deleted_at: null,
    };
    const tags = [...new Set((body.tags as string[] | undefined) ?? [])];
    try {
      await this.repo.insert(row, props, tags);
    } catch (e) {
      if (await this.repo.exists(id).catch(() => false)) throw conflict(`Image ID ${id} already exists!`);
      throw e;
    }
    // The image as written (not read back: two statements less per create), its properties in
    // the request's order as Glance answers a create.
    return { ...row, properties: props, tags, locations: [] };
  }

  /**
   * Apply a JSON patch's changes (each writable and valid against the image schema: the route
   * checked): changes of the locations list first, each saved as it is applied (their data
   * moves with them), then all other changes at once (all or none).
   */
  async update(a: AuthContext, id: string, changes: ImageChange[]): Promise<ImageRecord> {
    const locationChanges = changes.filter((c) => c.key === 'locations');
    if (locationChanges.length) {
      await this.locations.apply(a, id, locationChanges);
      changes = changes.filter((c) => c.key !== 'locations');
      if (changes.length === 0) return (await this.repo.load(id))!;
    }
    const img = await this.get(a, id);
    const pol = this.imagePolicy(a, img);
    pol.modifyImage();
    const base: Record<string, unknown> = {
      name: img.name, visibility: img.visibility, protected: !!img.protected, os_hidden: !!img.os_hidden,
      owner: img.owner, container_format: img.container_format, disk_format: img.disk_format,
      min_ram: img.min_ram, min_disk: img.min_disk, tags: [...img.tags],
    };
    const props: Record<string, string> = Object.assign(Object.create(null) as Record<string, string>, img.properties);
    for (const { op, key, path, value, hasValue } of changes) {
      if (op === 'remove') {
        if (BASE_ATTRS.has(key)) throw forbidden(`Property ${key} may not be removed.`);
        if (!(key in props)) throw conflict(`Property ${key} does not exist.`);
        delete props[key];
        continue;
      }
      if (!hasValue) throw new HttpError(400, `Operation "${op}" requires a member named "value".`);
      checkLimits(key, value);
      if (BASE_ATTRS.has(key)) {
        if (op === 'add' && key !== 'tags' && !(key in base)) throw new HttpError(400, `Invalid JSON pointer for this resource: '${path}'`);
        base[key] = key === 'tags' ? [...new Set(value as string[])] : value;
      } else {
        if (op === 'replace' && !(key in props)) throw conflict(`Property ${key} does not exist.`);
        // kernel_id and ramdisk_id may be null in the schema: a property row holds a string, so null unsets it.
        if (value === null) delete props[key]; else props[key] = value as string;
      }
    }
    if (Object.keys(props).length > MAX_PROPERTIES) throw new HttpError(413, `Maximum number of image properties exceeded (${MAX_PROPERTIES}).`);
    if (base.visibility !== img.visibility) pol.visibility(base.visibility as string);
    if (base.owner !== img.owner && !a.isAdmin) throw forbidden("You are not permitted to modify 'owner' on this image.");
    for (const f of ['disk_format', 'container_format'] as const) {
      if (base[f] !== img[f] && img.status !== 'queued') throw forbidden(`Attribute ${f} can be only replaced for a queued image.`);
    }
    const saved = await this.repo.update(img, {
      name: base.name as string | null, visibility: base.visibility as string, protected: base.protected ? 1 : 0,
      os_hidden: base.os_hidden ? 1 : 0, owner: base.owner as string | null, container_format: base.container_format as string | null,
      disk_format: base.disk_format as string | null, min_ram: base.min_ram as number, min_disk: base.min_disk as number,
    }, props, base.tags as string[]);
    if (!saved) throw conflict(`Image ${img.id} was changed by another request; retry.`);
    return (await this.repo.load(img.id))!;
  }

  async delete(a: AuthContext, id: string, token?: string, proxiedBy?: string): Promise<void> {
    let img = await this.get(a, id);
    this.imagePolicy(a, img).deleteImage();
    const self = this.limits.stageHost?.();
    const host = otherStageHost(img.properties, self, proxiedBy);
    if (host) {
      // Staged on another node: deleted there, with its staged data (Glance's _delete_image_on_remote).
      // A stage host that cannot do it (5xx, unreachable) leaves its staged file; the image is deleted here.
      try {
        return await proxyToStageHost(host, self, 'DELETE', `/v2/images/${img.id}`, token);
      } catch (e) {
        if (!(e instanceof HttpError) || e.status < 500) throw e;
        this.log.warn('the stage host did not delete the image; deleting it here (its staged data stays there)', { image: img.id, stage_host: host, error: e.message });
        img = await this.get(a, id);
      }
    }
    if (img.protected) throw forbidden(`Image ${img.id} is protected and cannot be deleted.`);
    if (this.limits.delayedDelete && img.locations.length > 0) {
      // Glance's Image.delete: pending_delete when the image has data; its status setter refuses
      // what the table does not allow (a deactivated image), which the API answers with 400.
      if (!canTransition(img.status, 'pending_delete')) throw badRequest(`Image status transition from ${img.status} to pending_delete is not allowed`);
      if (!(await this.repo.markPendingDelete(img))) throw notFound(`No image found with ID ${img.id}`);
    } else {
      assertTransition(img.status, 'deleted');
      // The data first, as Glance's Image.delete: a store that keeps it in use (409) keeps the image too.
      await this.locations.deleteAllData(img);
      if (!(await this.repo.softDelete(img))) throw notFound(`No image found with ID ${img.id}`);
    }
    await rm(join(this.limits.stagingDir, img.id), { force: true });
  }

  /** deactivate: active → deactivated; reactivate: deactivated → active (already there: nothing to do). */
  async setActivation(a: AuthContext, id: string, action: 'deactivate' | 'reactivate'): Promise<void> {
    const img = await this.get(a, id);
    const pol = this.imagePolicy(a, img);
    if (action === 'deactivate') pol.deactivate(); else pol.reactivate();
    const to = action === 'deactivate' ? 'deactivated' : 'active';
    if (img.status === to) return;
    // Glance answers a deactivation of anything but an active image with 403, not 409.
    if (img.status !== (action === 'deactivate' ? 'active' : 'deactivated')) throw forbidden(`Not allowed to ${action} image in status '${img.status}'`);
    assertTransition(img.status, to);
    if (!(await this.repo.setStatus(img, to))) throw conflict(`Image ${img.id} was changed by another request; retry.`);
  }

  async addTag(a: AuthContext, id: string, tag: string): Promise<void> {
    const img = await this.get(a, id);
    this.imagePolicy(a, img).modifyImage();
    if (!img.tags.includes(tag) && img.tags.length >= MAX_TAGS_PER_IMAGE) throw new HttpError(413, `Maximum number of tags exceeded (${MAX_TAGS_PER_IMAGE}).`);
    await this.repo.addTag(img.id, tag);
  }

  async removeTag(a: AuthContext, id: string, tag: string): Promise<void> {
    const img = await this.get(a, id);
    this.imagePolicy(a, img).modifyImage();
    if (!(await this.repo.removeTag(img.id, tag))) throw notFound(`Tag ${tag} not found`);
  }

  // --- members

  private async memberPolicy(a: AuthContext, id: string): Promise<{ img: ImageRecord; pol: MemberApiPolicy }> {
    const img = await this.get(a, id);
    return { img, pol: new MemberApiPolicy(this.policy, credentials(a), policyImage(img)) };
  }

  /** The owner and admins see every member; a member sees only its own membership. */
  async members(a: AuthContext, id: string): Promise<ImageMembersTable[]> {
    const { img, pol } = await this.memberPolicy(a, id);
    pol.getMembers();
    return this.repo.members(img.id, a.isAdmin || img.owner === a.projectId ? undefined : a.projectId ?? '');
  }

  async member(a: AuthContext, id: string, member: string): Promise<ImageMembersTable> {
    const { img, pol } = await this.memberPolicy(a, id);
    const m = await this.repo.member(img.id, member);
    // Only the owner, the member itself and admins may see a membership.
    if (!m || (!a.isAdmin && img.owner !== a.projectId && m.member !== a.projectId)) throw notFound(`Member ${member} not found`);
    pol.getMember();
    return m;
  }

  async addMember(a: AuthContext, id: string, member: string): Promise<ImageMembersTable> {
    const { img, pol } = await this.memberPolicy(a, id);
    pol.addMember();
    if (member === img.owner) throw forbidden('The owner of an image cannot be added as its member.');
    if (await this.repo.member(img.id, member)) throw conflict(`Member ${member} already exists on image ${img.id}.`);
    if (await this.repo.countMembers(img.id) >= MAX_MEMBERS) throw new HttpError(413, `Maximum number of image members exceeded (${MAX_MEMBERS}).`);
    const ts = now();
    const row = { image_id: img.id, member, status: 'pending', created_at: ts, updated_at: ts };
    await this.repo.addMember(row);
    return row;
  }

  async setMemberStatus(a: AuthContext, id: string, member: string, status: string): Promise<ImageMembersTable> {
    const m = await this.member(a, id, member);
    const { pol } = await this.memberPolicy(a, id);
    if (m.member !== a.projectId && !a.isAdmin) throw forbidden('You are not permitted to modify the status of this member: only the member project may.');
    pol.modifyMember();
    const ts = now();
    await this.repo.setMemberStatus(m.image_id, m.member, status, ts);
    return { ...m, status, updated_at: ts };
  }

  async removeMember(a: AuthContext, id: string, member: string): Promise<void> {
    const m = await this.member(a, id, member);
    const { pol } = await this.memberPolicy(a, id);
    pol.deleteMember();
    await this.repo.removeMember(m.image_id, m.member);
  }
}

/** An image as the policy's target sees it (sizes as numbers, as Glance's ImageTarget has them). */
function policyImage(img: ImageRecord): PolicyImage {
  return { ...img, size: num(img.size), virtual_size: num(img.virtual_size) };
}

/** The extra (non-column) properties of a create request, within the property limit. */
function extraProperties(body: Record<string, unknown>): Record<string, string> {
  // (a null-prototype object, so a property named __proto__ is stored like any other)
  const props: Record<string, string> = Object.create(null) as Record<string, string>;
  // (kernel_id and ramdisk_id may be null in the schema: not set)
  for (const [key, v] of Object.entries(body)) if (!BASE_ATTRS.has(key) && v !== null) props[key] = v as string;
  if (Object.keys(props).length > MAX_PROPERTIES) throw new HttpError(413, `Maximum number of image properties exceeded (${MAX_PROPERTIES}).`);
  return props;
}

/** A membership as the API shows it. */
export function memberView(m: ImageMembersTable): Record<string, unknown> {
  return {
    member_id: m.member, image_id: m.image_id, status: m.status,
    created_at: apiTime(m.created_at), updated_at: apiTime(m.updated_at), schema: '/v2/schemas/member',
  };
}
