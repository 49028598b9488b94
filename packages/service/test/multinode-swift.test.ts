/**
 * Two API nodes on one PostgreSQL database and one Swift store (the all-in-one of
 * .ci/services/swift.sh, a fresh container): an image uploaded on one node is the same on the
 * other; lists, members and quotas agree (multinode.ts sharedImages), with Swift's listings as
 * the oracle.
 */
import { test } from 'node:test';
import { needs } from '@diskhub/testkit';
import { QUOTA_ENV, sharedImages, twoNodes } from './multinode.js';
import { swiftOracle } from './multinode-stores.js';

test('two API nodes on PostgreSQL and Swift: upload on a, download on b; lists, members and quotas agree', needs('openstack', 'glance', 'qemu-img'), async (t) => {
  const store = await swiftOracle(t);
  const nodes = store && await twoNodes(t, store, QUOTA_ENV);
  if (store && nodes) await sharedImages(t, nodes, store);
});
