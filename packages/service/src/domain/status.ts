/**
 * The image status machine as a table: for each status, the statuses an image may move to
 * (Glance's `Image.valid_state_targets`, glance/domain/__init__.py). Every status change the
 * service makes is checked against it, so a new code path cannot invent a transition.
 */
import { conflict } from '../http.js';

export const IMAGE_STATUSES = ['queued', 'saving', 'uploading', 'importing', 'active', 'deactivated', 'killed', 'pending_delete', 'deleted'] as const;
export type ImageStatus = typeof IMAGE_STATUSES[number];

export const VALID_TARGETS: Readonly<Record<ImageStatus, readonly ImageStatus[]>> = {
  // queued: data arrives directly (saving), is staged (uploading), or imported from elsewhere.
  queued: ['saving', 'uploading', 'importing', 'active', 'deleted'],
  // saving → queued: an interrupted or refused upload may be retried (v2 deprecates killed).
  saving: ['active', 'killed', 'deleted', 'queued'],
  uploading: ['importing', 'queued', 'deleted'],
  importing: ['active', 'deleted', 'queued'],
  active: ['pending_delete', 'deleted', 'deactivated'],
  killed: ['deleted'],
  // pending_delete (delayed delete): the scrubber removes the data (deleted) or an admin restores it (active).
  pending_delete: ['deleted', 'active'],
  deleted: [],
  deactivated: ['active', 'deleted'],
};

export const isImageStatus = (s: string): s is ImageStatus => (IMAGE_STATUSES as readonly string[]).includes(s);

export function canTransition(from: string, to: ImageStatus): boolean {
  return isImageStatus(from) && VALID_TARGETS[from].includes(to);
}

/** Glance's 409 for a transition the table does not allow. */
export function assertTransition(from: string, to: ImageStatus): void {
  if (!canTransition(from, to)) throw conflict(`Image status transition from ${from} to ${to} is not allowed`);
}

/** The statuses from which `to` may be reached. */
export function sourcesOf(to: ImageStatus): ImageStatus[] {
  return IMAGE_STATUSES.filter((s) => VALID_TARGETS[s].includes(to));
}
