/**
 * Two API nodes on one PostgreSQL database and one Swift store: a web-download import whose
 * node is SIGKILLed mid-transfer is finished by the other node, and the killed node's segments
 * and upload marker do not stay in the store (multinode.ts takeover); the `swift` client
 * confirms what is left: the image's manifest and its own segments.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { needs } from '@diskhub/testkit';
import { takeoverFromScratch } from './multinode.js';
import { swiftOracle } from './multinode-stores.js';
import { swiftCliList, swiftManifest } from './swift-peer.js';

test('two API nodes on PostgreSQL and Swift: a web-download whose node is SIGKILLed is finished by the other', needs('qemu-img', 'swift'), async (t) => {
  const store = await swiftOracle(t);
  const id = store && await takeoverFromScratch(t, store);
  if (!store || !id) return;
  assert.deepEqual((await swiftCliList(store.container)).filter((n) => n.includes(id)), [id]);
  const segments = (await swiftCliList(`${store.container}_segments`)).filter((n) => n.includes(id));
  assert.deepEqual(segments.map((n) => `${store.container}_segments/${n}`), await swiftManifest(store.container, id));
});
