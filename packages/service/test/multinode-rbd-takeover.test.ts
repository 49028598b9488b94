/**
 * Two API nodes on one PostgreSQL database and one RBD store: a web-download import whose node
 * is SIGKILLed mid-transfer is finished by the other node, and the killed node's partial RBD
 * image does not stay in the pool (multinode.ts takeover; `rbd ls` is the oracle).
 */
import { test } from 'node:test';
import { needs } from '@diskhub/testkit';
import { takeoverFromScratch } from './multinode.js';
import { rbdOracle } from './multinode-stores.js';

test('two API nodes on PostgreSQL and RBD: a web-download whose node is SIGKILLed is finished by the other', needs('qemu-img', 'rbd'), async (t) => {
  const store = rbdOracle(t);
  if (store) await takeoverFromScratch(t, store);
});
