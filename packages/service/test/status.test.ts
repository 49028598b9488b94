/**
 * The image status table (domain/status.ts) against Glance's Image.valid_state_targets, and
 * the transitions the service makes: no HTTP, no database.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { IMAGE_STATUSES, VALID_TARGETS, assertTransition, canTransition, sourcesOf } from '../src/domain/status.js';
import { STATUSES } from '../src/schemas.js';

test('every status of the image schema is in the table, and every target is a status', () => {
  assert.deepEqual([...IMAGE_STATUSES].sort(), [...STATUSES].sort());
  for (const targets of Object.values(VALID_TARGETS) as (readonly string[])[]) for (const t of targets) assert.ok((IMAGE_STATUSES as readonly string[]).includes(t), t);
});

test("the transitions the API makes are allowed, and Glance's forbidden ones are refused", () => {
  // Upload, staging, import, deactivation, deletion and their failures.
  for (const [from, to] of [
    ['queued', 'saving'], ['saving', 'active'], ['saving', 'queued'], ['queued', 'uploading'], ['uploading', 'importing'],
    ['uploading', 'queued'], ['importing', 'active'], ['importing', 'queued'], ['active', 'deactivated'], ['deactivated', 'active'],
    ['queued', 'deleted'], ['active', 'deleted'], ['deactivated', 'deleted'], ['saving', 'deleted'], ['killed', 'deleted'],
  ] as const) assert.ok(canTransition(from, to), `${from} → ${to}`);
  for (const [from, to] of [
    ['active', 'saving'], ['active', 'queued'], ['deleted', 'active'], ['deleted', 'queued'], ['queued', 'deactivated'],
    ['saving', 'uploading'], ['uploading', 'active'], ['deactivated', 'saving'], ['killed', 'active'], ['importing', 'saving'],
  ] as const) assert.equal(canTransition(from, to), false, `${from} → ${to}`);
  // Nothing leaves deleted; an unknown status goes nowhere.
  assert.deepEqual(VALID_TARGETS.deleted, []);
  assert.equal(canTransition('bogus', 'active'), false);
});

test("a refused transition is Glance's 409 with its message", () => {
  assert.throws(() => assertTransition('active', 'saving'), (e: any) => e.status === 409 && e.message === 'Image status transition from active to saving is not allowed');
  assert.doesNotThrow(() => assertTransition('queued', 'saving'));
});

test('sourcesOf inverts the table', () => {
  assert.deepEqual(sourcesOf('queued').sort(), ['importing', 'saving', 'uploading']);
  assert.deepEqual(sourcesOf('deactivated'), ['active']);
  for (const from of IMAGE_STATUSES) for (const to of IMAGE_STATUSES) assert.equal(sourcesOf(to).includes(from), canTransition(from, to));
});
