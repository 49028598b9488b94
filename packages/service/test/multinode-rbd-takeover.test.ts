/**
 * Two API nodes on one PostgreSQL database and one RBD store: a web-download import whose node
 * is SIGKILLed mid-transfer is finished by the other node, and the killed node's partial RBD
 * image does not stay in the pool (multinode.ts takeover; `rbd ls` is the oracle).
 */
import { test } from 'node:test';
import { needs, tempDir } from '@diskhub/testkit';
import { randomQcow2, takeover, takeoverEnv, twoNodes } from './multinode.js';
import { rbdOracle } from './multinode-stores.js';
import { slowServer } from './web-source.js';

test('two API nodes on PostgreSQL and RBD: a web-download whose node is SIGKILLed is finished by the other', needs('qemu-img', 'rbd'), async (t) => {
  const store = rbdOracle(t);
  if (!store) return;
  const qcow = await randomQcow2(await tempDir(t), 4);
  const web = await slowServer(t, qcow.bytes, 1, 'disk.qcow2');
  const nodes = await twoNodes(t, store, takeoverEnv(web.port));
  if (nodes) await takeover(nodes, store, web, qcow.bytes);
});
