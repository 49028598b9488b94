/**
 * Delayed delete on each database (SQLite, PostgreSQL, MariaDB): the scrub leases hold when two
 * scrubbers race, and restore and scrub work through the `diskhub scrub` command.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { diskhub } from '@diskhub/testkit';
import { api, startTestService, token } from './helpers.js';
import { provisioners } from './databases.js';
import { dataFile, exists, scrubEnv, statusOf, upload } from './scrub-helpers.js';
import { Scrubber } from '../src/domain/scrubber.js';
import { ScrubRepo } from '../src/repo/scrubs.js';
import { jsonLogger } from '../src/log.js';

for (const [dialect, provision] of Object.entries(provisioners)) {
  test(`delayed delete on ${dialect}: two scrubbers racing scrub each image once; restore and scrub through the command`, async (t) => {
    const provisioned = await provision(t);
    if (!provisioned) return;
    const svc = await startTestService(t, { DISKHUB_DATABASE_URL: provisioned.url, DISKHUB_DELAYED_DELETE: 'true', DISKHUB_SCRUB_WAKEUP_TIME: '0' });
    t.after(provisioned.drop);
    const tok = await token(svc.url);
    const a = api(svc.url, tok);
    const ids: string[] = [];
    for (let i = 0; i < 20; i++) ids.push(await upload(svc.url, tok, randomBytes(1000 + i)));
    const kept = await upload(svc.url, tok, randomBytes(5000), { name: 'kept' });
    for (const id of [...ids, kept]) assert.equal((await a('DELETE', `/v2/images/${id}`)).status, 204);
    const env = scrubEnv(svc, { DISKHUB_DATABASE_URL: provisioned.url });
    const restored = await diskhub(['scrub', '--restore', kept], { env });
    assert.equal(restored.code, 0, restored.stderr);
    assert.equal((await a('GET', `/v2/images/${kept}`)).json.status, 'active');

    // Two nodes' scrubbers at once on the same database: every image's data is deleted exactly once.
    const deletes = new Map<string, number>();
    // (file store locations are file:// URLs ending in the image id)
    const store = {
      delete: async (location: string) => {
        const id = location.slice(location.lastIndexOf('/') + 1);
        deletes.set(id, (deletes.get(id) ?? 0) + 1);
        await rm(join(svc.dataDir, 'images', id), { force: true });
      },
    };
    const silent = jsonLogger({ write: () => {} }, 'silent');
    const runs = await Promise.all(['node-a', 'node-b'].map((node) => new Scrubber(new ScrubRepo(svc.db), () => store, { scrubTime: 0, node }, silent).runOnce()));
    assert.equal(runs[0]!.scrubbed.length + runs[1]!.scrubbed.length, ids.length);
    assert.deepEqual([...deletes.keys()].sort(), [...ids].sort());
    assert.ok([...deletes.values()].every((n) => n === 1), 'no image scrubbed twice');
    for (const id of ids) assert.deepEqual(await statusOf(svc, id), { status: 'deleted', deleted: 1 });
    assert.equal((await diskhub(['scrub'], { env })).code, 0);
    assert.ok(await exists(dataFile(svc, kept)), 'the restored image keeps its data');
    assert.equal((await a('GET', `/v2/images/${kept}`)).json.status, 'active');
  });
}
