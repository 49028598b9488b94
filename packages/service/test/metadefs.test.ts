/**
 * Writable metadata definitions: the glance client's md-* commands create, change and delete
 * namespaces, properties, objects, tags and resource type associations; visibility,
 * protection and admin-only writes answer as Glance does (its metadef policy rules, which a
 * policy file can change); the standard set survives restarts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { needs, runOk, run, tempDir } from '@diskhub/testkit';
import { addProjectUser, api, osEnv, startTestService, token } from './helpers.js';

test('metadefs: the glance client writes namespaces, properties, objects, tags and associations', needs('glance'), async (t) => {
  const svc = await startTestService(t);
  const env = osEnv(svc.url);
  const glance = (...args: string[]) => runOk('glance', args, { env });
  await glance('md-namespace-create', 'Diskhub::Test', '--display-name', 'Test namespace', '--description', 'For the test', '--visibility', 'public');
  assert.match(await glance('md-namespace-list'), /Diskhub::Test/);
  await glance('md-property-create', 'Diskhub::Test', '--name', 'dh_speed', '--title', 'Speed', '--schema', '{"type": "integer", "minimum": 1}');
  assert.match(await glance('md-property-show', 'Diskhub::Test', 'dh_speed'), /minimum\s*\|\s*1/);
  await glance('md-property-update', 'Diskhub::Test', 'dh_speed', '--name', 'dh_rate', '--title', 'Rate', '--schema', '{"type": "string", "enum": ["slow", "fast"]}');
  assert.match(await glance('md-property-list', 'Diskhub::Test'), /dh_rate\s*\|\s*Rate\s*\|\s*string/);
  await glance('md-object-create', 'Diskhub::Test', '--name', 'Flavor', '--schema', '{"description": "sizes", "properties": {"size": {"type": "integer", "title": "Size"}}}');
  assert.match(await glance('md-object-show', 'Diskhub::Test', 'Flavor'), /sizes/);
  await glance('md-tag-create-multiple', 'Diskhub::Test', '--names', 'red,green');
  await glance('md-tag-create', '--name', 'blue', 'Diskhub::Test');
  await glance('md-tag-update', 'Diskhub::Test', 'red', '--name', 'crimson');
  const tags = await glance('md-tag-list', 'Diskhub::Test');
  for (const tag of ['crimson', 'green', 'blue']) assert.match(tags, new RegExp(tag));
  assert.doesNotMatch(tags, /\bred\b/);
  await glance('md-resource-type-associate', 'Diskhub::Test', '--name', 'OS::Glance::Image', '--prefix', 'dh_');
  assert.match(await glance('md-namespace-resource-type-list', 'Diskhub::Test'), /OS::Glance::Image\s*\|\s*dh_/);
  assert.match(await glance('md-namespace-list', '--resource-types', 'OS::Glance::Image'), /Diskhub::Test/);
  await glance('md-resource-type-deassociate', 'Diskhub::Test', 'OS::Glance::Image');
  await glance('md-namespace-update', 'Diskhub::Test', '--protected', 'True');
  // Protected: neither it nor what is in it can be deleted.
  const refused = await run('glance', ['md-namespace-delete', 'Diskhub::Test'], { env });
  assert.notEqual(refused.code, 0);
  assert.match(refused.stderr, /403|protected/i);
  assert.notEqual((await run('glance', ['md-tag-delete', 'Diskhub::Test', 'green'], { env })).code, 0);
  await glance('md-namespace-update', 'Diskhub::Test', '--protected', 'False');
  await glance('md-tag-delete', 'Diskhub::Test', 'green');
  await glance('md-object-delete', 'Diskhub::Test', 'Flavor');
  await glance('md-property-delete', 'Diskhub::Test', 'dh_rate');
  await glance('md-namespace-delete', 'Diskhub::Test');
  const gone = await run('glance', ['md-namespace-show', 'Diskhub::Test'], { env });
  assert.notEqual(gone.code, 0);
  assert.match(gone.stderr, /404|not found/i);
});

test('metadefs API: validation, visibility, admin-only writes, conflicts, the standard set', async (t) => {
  const svc = await startTestService(t);
  const tok = await token(svc.url);
  const a = api(svc.url, tok);
  await addProjectUser(svc.url, tok, 'p2', 'user2', 'pw2');
  const user = api(svc.url, await token(svc.url, 'user2', 'pw2', 'p2'));

  // The standard set is there and protected.
  const std = await a('GET', '/v2/metadefs/namespaces/OS::Compute::LibvirtImage');
  assert.equal(std.json.protected, true);
  assert.equal((await a('DELETE', '/v2/metadefs/namespaces/OS::Compute::LibvirtImage')).status, 403);
  assert.equal((await a('DELETE', '/v2/metadefs/namespaces/OS::Compute::LibvirtImage/properties/hw_disk_bus')).status, 403);

  const created = await a('POST', '/v2/metadefs/namespaces', { body: {
    namespace: 'Private::One', properties: { p1: { title: 'P1', type: 'boolean' } },
    tags: [{ name: 't1' }], resource_type_associations: [{ name: 'Custom::Thing', prefix: 'x_' }],
  } });
  assert.equal(created.status, 201, created.text);
  assert.equal(created.json.visibility, 'private');
  assert.deepEqual(created.json.tags, [{ name: 't1' }]);
  assert.ok((await a('GET', '/v2/metadefs/resource_types')).json.resource_types.some((r: { name: string }) => r.name === 'Custom::Thing'), 'associating creates the resource type');
  assert.equal((await a('POST', '/v2/metadefs/namespaces', { body: { namespace: 'Private::One' } })).status, 409);
  assert.equal((await a('POST', '/v2/metadefs/namespaces/Private::One/properties', { body: { name: 'p1', title: 'again', type: 'string' } })).status, 409);
  // Bad input: 400, never 500.
  for (const bad of [{}, { namespace: '' }, { namespace: 'x'.repeat(81) }, { namespace: 'V', visibility: 'everyone' }, { namespace: 'V', properties: { p: { type: 'string' } } }, { namespace: 'V', protected: 'yes' }]) {
    assert.equal((await a('POST', '/v2/metadefs/namespaces', { body: bad })).status, 400, JSON.stringify(bad));
  }
  assert.equal((await a('POST', '/v2/metadefs/namespaces/Private::One/properties', { body: { name: 'q', title: 'Q', type: 'color' } })).status, 400);
  assert.equal((await a('POST', '/v2/metadefs/namespaces', { raw: '{"namespace":', type: 'application/json' })).status, 400);

  // Another project's user does not see a private namespace, and no one but admins writes.
  assert.equal((await user('GET', '/v2/metadefs/namespaces/Private::One')).status, 404);
  assert.ok(!(await user('GET', '/v2/metadefs/namespaces')).json.namespaces.some((n: { namespace: string }) => n.namespace === 'Private::One'));
  assert.equal((await user('POST', '/v2/metadefs/namespaces', { body: { namespace: 'Mine' } })).status, 403);
  assert.equal((await user('DELETE', '/v2/metadefs/namespaces/OS::OperatingSystem/tags')).status, 403);
  // Made public, everyone sees it.
  const put = await a('PUT', '/v2/metadefs/namespaces/Private::One', { body: { namespace: 'Public::One', visibility: 'public' } });
  assert.equal(put.status, 200, put.text);
  assert.equal((await user('GET', '/v2/metadefs/namespaces/Public::One')).json.properties.p1.type, 'boolean');
  assert.equal((await a('GET', '/v2/metadefs/namespaces/Private::One')).status, 404, 'renamed');

  // Pagination over namespaces.
  const seen: string[] = [];
  let next: string | undefined = '/v2/metadefs/namespaces?limit=2&sort_key=namespace&sort_dir=asc';
  while (next) {
    const page: { json: { namespaces: { namespace: string }[]; next?: string } } = await a('GET', next);
    seen.push(...page.json.namespaces.map((n) => n.namespace));
    next = page.json.next;
  }
  assert.deepEqual(seen, [...seen].sort());
  assert.equal(seen.length, (await a('GET', '/v2/metadefs/namespaces')).json.namespaces.length);
});

test("metadefs follow Glance's metadef policy rules, and an operator's policy file changes them", needs('glance'), async (t) => {
  const dir = await tempDir(t);
  const file = join(dir, 'policy.yaml');
  // Metadef writers besides admins; and tags of namespaces are nobody's to read but admins'.
  await writeFile(file, '"metadef_admin": "role:admin or role:metadef_editor"\n"get_metadef_tags": "role:admin"\n');
  const svc = await startTestService(t, { DISKHUB_POLICY_FILE: file });
  const adminTok = await token(svc.url);
  await addProjectUser(svc.url, adminTok, 'md-p', 'md-member', 'pw');
  await addProjectUser(svc.url, adminTok, 'md-e', 'md-editor', 'pw');
  const admin = api(svc.url, adminTok);
  const editorRole = await admin('POST', '/identity/v3/roles', { body: { role: { name: 'metadef_editor' } } });
  const editorUser = (await admin('GET', '/identity/v3/users?name=md-editor')).json.users[0].id;
  const editorProject = (await admin('GET', '/identity/v3/projects?name=md-e')).json.projects[0].id;
  assert.equal((await admin('PUT', `/identity/v3/projects/${editorProject}/users/${editorUser}/roles/${editorRole.json.role.id}`)).status, 204);

  // The editor creates and tags a namespace through the real glance client.
  const editorEnv = osEnv(svc.url, 'md-editor', 'pw', 'md-e');
  await runOk('glance', ['md-namespace-create', 'Editor::NS', '--visibility', 'public'], { env: editorEnv });
  await runOk('glance', ['md-tag-create', '--name', 'red', 'Editor::NS'], { env: editorEnv });
  // A plain member may read the namespace but not write it (add_metadef_property is metadef_admin).
  const member = api(svc.url, await token(svc.url, 'md-member', 'pw', 'md-p'));
  assert.equal((await member('GET', '/v2/metadefs/namespaces/Editor::NS')).status, 200);
  const denied = await member('POST', '/v2/metadefs/namespaces/Editor::NS/properties', { body: { name: 'x', title: 'X', type: 'string' } });
  assert.equal(denied.status, 403);
  assert.match(denied.text, /You are not authorized to complete add_metadef_property action\./);
  const cli = await run('glance', ['md-namespace-create', 'Member::NS'], { env: osEnv(svc.url, 'md-member', 'pw', 'md-p') });
  assert.notEqual(cli.code, 0);
  assert.match(cli.stdout + cli.stderr, /403|not authorized/i);
  // The file's get_metadef_tags: the editor (not an admin) may no longer list tags; admins may.
  const editor = api(svc.url, await token(svc.url, 'md-editor', 'pw', 'md-e'));
  assert.equal((await editor('GET', '/v2/metadefs/namespaces/Editor::NS/tags')).status, 403);
  assert.equal((await admin('GET', '/v2/metadefs/namespaces/Editor::NS/tags')).json.tags[0].name, 'red');
  // A private namespace of another project stays invisible (404), whatever is asked of it.
  await admin('POST', '/v2/metadefs/namespaces', { body: { namespace: 'Admin::Private', visibility: 'private' } });
  assert.equal((await editor('GET', '/v2/metadefs/namespaces/Admin::Private')).status, 404);
  assert.equal((await editor('POST', '/v2/metadefs/namespaces/Admin::Private/tags/x')).status, 404);
});

test('a policy file that does not parse stops the service from starting, naming the rule', async (t) => {
  const file = join(await tempDir(t), 'policy.yaml');
  await writeFile(file, '"add_metadef_tag": "role:admin and (role:x"\n');
  await assert.rejects(startTestService(t, { DISKHUB_POLICY_FILE: file }), /rule 'add_metadef_tag' does not parse/);
});
