/**
 * The Images API's use of the policy, as Glance 25's glance/api/v2/policy.py (ImageAPIPolicy,
 * MemberAPIPolicy) and image_members.py do it: which rule each action checks, the target it
 * checks it on, when a refusal is reported as 404 instead of 403, and the legacy ownership
 * checks Glance still applies while `enforce_secure_rbac` is off (its default in Zed).
 *
 * With Glance 25's defaults most rules pass for any role (see glance-defaults.ts), so who may
 * change an image is decided here: an admin, or any caller whose project owns it ("You do not
 * own this image"). Checked against the real Glance 25 (keystone context, default policy):
 * a reader of the owning project may update, upload, deactivate and delete; a member of
 * another project gets 403 on a community image it can see.
 */
import { PolicyNotAuthorized, type Policy, type PolicyCredentials } from './policy.js';

/** What the policy needs of an image (the repository's record satisfies it). */
export interface PolicyImage {
  id: string;
  owner: string | null;
  visibility: string;
  status: string;
  name?: string | null;
  protected?: boolean | number;
  os_hidden?: boolean | number;
  disk_format?: string | null;
  container_format?: string | null;
  min_disk?: number;
  min_ram?: number;
  size?: number | null;
  virtual_size?: number | null;
  checksum?: string | null;
  tags?: Iterable<string>;
  properties?: Record<string, string>;
}

/** The caller may not even see the image: answer 404, not 403 (Glance hides what it refuses to show). */
export class PolicyHidesImage extends Error {
  readonly status = 404;
  constructor(readonly rule: string, readonly imageId: string) {
    super(`No image found with ID ${imageId}`);
    this.name = 'PolicyHidesImage';
  }
}

/** Refusals whose message is not "not authorized to complete": Glance's legacy ownership checks. */
export class PolicyForbidden extends PolicyNotAuthorized {
  constructor(rule: string, message: string) {
    super(rule);
    this.message = message;
  }
}

/**
 * An image as a policy target, the keys of Glance's ImageTarget: the image's attributes,
 * `project_id` for its owner, `member_id` for the caller's project when the caller sees a
 * shared image it does not own (Glance sets `member` so), and the custom properties.
 */
export function imageTarget(image: PolicyImage, creds: PolicyCredentials): Record<string, unknown> {
  const member = image.visibility === 'shared' && creds.project_id !== image.owner ? creds.project_id : null;
  return {
    ...(image.properties ?? {}),
    id: image.id, image_id: image.id, name: image.name ?? null, status: image.status,
    visibility: image.visibility, owner: image.owner, project_id: image.owner,
    protected: !!image.protected, os_hidden: !!image.os_hidden,
    disk_format: image.disk_format ?? null, container_format: image.container_format ?? null,
    min_disk: image.min_disk ?? 0, min_ram: image.min_ram ?? 0, size: image.size ?? null,
    virtual_size: image.virtual_size ?? null, checksum: image.checksum ?? null,
    tags: image.tags ? [...image.tags] : [], member, member_id: member,
  };
}

/** An image not created yet (create, list): Glance's dict target of the proposed owner and visibility. */
export function proposedImageTarget(proposed: { owner?: string | null; visibility?: string }, creds: PolicyCredentials): Record<string, unknown> {
  const owner = proposed.owner === undefined ? creds.project_id : proposed.owner;
  return { project_id: owner, owner, visibility: proposed.visibility ?? 'private' };
}

/** The checks of one request on one image (or on a proposed image for create and list). */
export class ImageApiPolicy {
  readonly target: Record<string, unknown>;
  private readonly image: PolicyImage | null;

  constructor(private readonly policy: Policy, private readonly creds: PolicyCredentials,
    image: PolicyImage | { owner?: string | null; visibility?: string }) {
    if ('id' in image && typeof image.id === 'string') {
      this.image = image as PolicyImage;
      this.target = imageTarget(this.image, creds);
    } else {
      this.image = null;
      this.target = proposedImageTarget(image, creds);
    }
  }

  private enforce(rule: string): void {
    if (this.policy.enforce(rule, this.target, this.creds)) return;
    // Refusing anything on an image the caller may not get is reported as not found.
    if (this.image && (rule === 'get_image' || !this.policy.enforce('get_image', this.target, this.creds))) {
      throw new PolicyHidesImage(rule, this.image.id);
    }
    throw new PolicyNotAuthorized(rule);
  }

  /** Glance's check_is_image_mutable: admins, and callers whose project owns the image. */
  private mutable(rule: string): void {
    if (this.creds.is_admin) return;
    const owner = this.image?.owner ?? null;
    if (owner === null || this.creds.project_id === null || owner !== this.creds.project_id) throw new PolicyForbidden(rule, 'You do not own this image');
  }

  getImage(): void { this.enforce('get_image'); }
  getImages(): void { this.enforce('get_images'); }
  downloadImage(): void { this.enforce('download_image'); }
  getImageLocation(): void { this.enforce('get_image_location'); }
  copyImage(): void { this.enforce('copy_image'); }

  addImage(): void {
    try {
      this.enforce('add_image');
    } catch (e) {
      if (e instanceof PolicyNotAuthorized && this.target.owner !== this.creds.project_id) {
        throw new PolicyForbidden('add_image', `You are not permitted to create images owned by '${String(this.target.owner)}'`);
      }
      throw e;
    }
    this.visibility(this.target.visibility as string);
    // Glance's check_admin_or_same_owner (its message has a trailing period this one does not).
    if (!this.creds.is_admin && this.target.owner !== this.creds.project_id) {
      throw new PolicyForbidden('add_image', `You are not permitted to create images owned by '${String(this.target.owner)}'.`);
    }
  }

  /** publicize_image / communitize_image for a visibility being set. */
  visibility(visibility: string | undefined): void {
    if (visibility === 'public') this.enforce('publicize_image');
    else if (visibility === 'community') this.enforce('communitize_image');
  }

  /** A PATCH of one attribute: visibility has its own rule first, then modify_image. */
  updateProperty(name: string, value?: unknown): void {
    if (name === 'visibility') this.visibility(value as string);
    this.modifyImage();
  }

  modifyImage(): void { this.enforce('modify_image'); this.mutable('modify_image'); }
  deleteImage(): void { this.enforce('delete_image'); this.mutable('delete_image'); }
  uploadImage(): void { this.enforce('upload_image'); this.mutable('upload_image'); }
  deactivate(): void { this.enforce('deactivate'); this.mutable('deactivate'); }
  reactivate(): void { this.enforce('reactivate'); this.mutable('reactivate'); }
  /** The locations API's add and replace: the rule, then (as Glance's database layer refuses to save another's image) ownership. */
  setImageLocation(): void { this.enforce('set_image_location'); this.mutable('set_image_location'); }
  deleteImageLocation(): void { this.enforce('delete_image_location'); this.mutable('delete_image_location'); }
}

/** Glance's DiscoveryAPIPolicy: what the /v2/info resources check (on an empty target). */
export class DiscoveryApiPolicy {
  constructor(private readonly policy: Policy, private readonly creds: PolicyCredentials) {}

  storesInfoDetail(): void {
    if (!this.policy.enforce('stores_info_detail', {}, this.creds)) throw new PolicyNotAuthorized('stores_info_detail');
  }
}

/**
 * The checks of the members API (MemberAPIPolicy and image_members.py's legacy ownership
 * checks): the caller must be able to get the image (else 404), the image must be shared,
 * and then the rule.
 */
export class MemberApiPolicy {
  private readonly imagePolicy: ImageApiPolicy;
  private readonly target: Record<string, unknown>;

  constructor(private readonly policy: Policy, private readonly creds: PolicyCredentials, private readonly image: PolicyImage) {
    this.imagePolicy = new ImageApiPolicy(policy, creds, image);
    this.target = this.imagePolicy.target;
  }

  private enforce(rule: string): void {
    this.imagePolicy.getImage();
    if (!this.policy.enforce(rule, this.target, this.creds)) throw new PolicyNotAuthorized(rule);
  }

  private shared(rule: string): void {
    if (this.image.visibility !== 'shared') throw new PolicyForbidden(rule, 'Only shared images have members.');
  }

  getMembers(): void { this.shared('get_members'); this.enforce('get_members'); }
  getMember(): void { this.shared('get_member'); this.enforce('get_member'); }

  addMember(): void {
    this.shared('add_member');
    if (!this.creds.is_admin && (this.image.owner === null || this.image.owner !== this.creds.project_id)) {
      throw new PolicyForbidden('add_member', 'You are not permitted to create image members for the image.');
    }
    this.enforce('add_member');
  }

  /** Setting a membership's status: the member project's business, never the owner's. */
  modifyMember(): void {
    this.shared('modify_member');
    if (!this.creds.is_admin && this.creds.project_id === this.image.owner) {
      throw new PolicyForbidden('modify_member', "You are not permitted to modify 'status' on this image member.");
    }
    this.enforce('modify_member');
  }

  deleteMember(): void {
    this.shared('delete_member');
    if (!this.creds.is_admin && this.creds.project_id !== this.image.owner) {
      throw new PolicyForbidden('delete_member', 'You cannot delete image member.');
    }
    this.enforce('delete_member');
  }
}
