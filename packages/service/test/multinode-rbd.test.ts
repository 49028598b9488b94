/**
 * Two API nodes on one PostgreSQL database and one RBD store (the one-node Ceph of
 * .ci/services/ceph.sh, pool `images`, as client.glance): an image uploaded on one node is the
 * same on the other; lists, members and quotas agree (multinode.ts sharedImages), with the rbd
 * CLI listing the pool as the oracle.
 */
import { test } from 'node:test';
import { needs } from '@diskhub/testkit';
import { QUOTA_ENV, sharedImages, twoNodes } from './multinode.js';
import { rbdOracle } from './multinode-stores.js';

test('two API nodes on PostgreSQL and RBD: upload on a, download on b; lists, members and quotas agree', needs('openstack', 'glance', 'qemu-img', 'rbd'), async (t) => {
  const store = rbdOracle(t);
  const nodes = store && await twoNodes(t, store, QUOTA_ENV);
  if (store && nodes) await sharedImages(t, nodes, store);
});
