/**
 * Two API nodes on one PostgreSQL database and one S3 store (the all-in-one's S3 API, a fresh
 * bucket): an image uploaded on one node is the same on the other; lists, members and quotas
 * agree (multinode.ts sharedImages), with the bucket's listings as the oracle.
 */
import { test } from 'node:test';
import { needs } from '@diskhub/testkit';
import { QUOTA_ENV, sharedImages, twoNodes } from './multinode.js';
import { s3Oracle } from './multinode-stores.js';

test('two API nodes on PostgreSQL and S3: upload on a, download on b; lists, members and quotas agree', needs('openstack', 'glance', 'qemu-img'), async (t) => {
  const store = await s3Oracle(t);
  const nodes = store && await twoNodes(t, store, QUOTA_ENV);
  if (store && nodes) await sharedImages(t, nodes, store);
});
