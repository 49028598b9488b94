/**
 * Malformed bodies and query strings, route family by route family: each answer is the
 * status and message Glance 25 gives for the same request (recorded from Debian's
 * glance-api 25 side by side with this service; python-jsonschema's sentences with
 * Python reprs for schema errors). Authentication still answers first.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { api, startTestService, token } from './helpers.js';

const V21 = 'application/openstack-images-v2.1-json-patch';
const V20 = 'application/openstack-images-v2.0-json-patch';
const UUID = '^([0-9a-fA-F]){8}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){12}$';
const schema = (s: string) => `Provided object does not match schema 'image': ${s}`;

/** [method, path (IMG: the image), body (a string is sent as is), content type, status, message] */
type Case = [string, string, unknown, string | null, number, string];

const cases: Case[] = [
  // --- image create: the image schema
  ['POST', '/v2/images', { name: 123 }, null, 400, schema("123 is not of type 'null', 'string'")],
  ['POST', '/v2/images', { name: 'x', min_ram: '5' }, null, 400, schema("'5' is not of type 'integer'")],
  ['POST', '/v2/images', { min_ram: 1.5 }, null, 400, schema("1.5 is not of type 'integer'")],
  ['POST', '/v2/images', { name: 'x', min_ram: -1 }, null, 400, "Invalid value '-1' for parameter 'min_ram': Cannot be a negative value"],
  ['POST', '/v2/images', { min_ram: 99999999999 }, null, 400, "'min_ram' value out of range, must not exceed 2147483647."],
  ['POST', '/v2/images', { name: 'x', foo: 5 }, null, 400, schema("5 is not of type 'string'")],
  ['POST', '/v2/images', { name: 'x', foo: null }, null, 400, schema("None is not of type 'string'")],
  ['POST', '/v2/images', { tags: 'a' }, null, 400, schema("'a' is not of type 'array'")],
  ['POST', '/v2/images', { tags: [1] }, null, 400, schema("1 is not of type 'string'")],
  ['POST', '/v2/images', { disk_format: 'foo' }, null, 400, schema("'foo' is not one of [None, 'ami', 'ari', 'aki', 'vhd', 'vhdx', 'vmdk', 'raw', 'qcow2', 'vdi', 'iso', 'ploop']")],
  ['POST', '/v2/images', { id: 'abc' }, null, 400, schema(`'abc' does not match '${UUID}'`)],
  ['POST', '/v2/images', { kernel_id: 'x' }, null, 400, schema(`'x' does not match '${UUID}'`)],
  ['POST', '/v2/images', { protected: 'yes' }, null, 400, schema("'yes' is not of type 'boolean'")],
  ['POST', '/v2/images', { name: 'é'.repeat(256) }, null, 400, schema(`'${'é'.repeat(256)}' is too long`)],
  ['POST', '/v2/images', { status: 'active', name: 5 }, null, 400, schema("5 is not of type 'null', 'string'")],
  ['POST', '/v2/images', { status: 'active' }, null, 403, "Attribute 'status' is read-only."],
  ['POST', '/v2/images', 'x', null, 400, 'Malformed JSON in request body.'],
  ['POST', '/v2/images', '"x"', null, 400, 'Unexpected body type. Expected list/dict.'],
  ['POST', '/v2/images', { tags: Array.from({ length: 200 }, (_, i) => `t${i}`) }, null, 413, 'Maximum number of tags exceeded (128).'],

  // --- JSON patch, both media types
  ['PATCH', '/v2/images/IMG', {}, V21, 400, 'Request body must be a JSON array of operation objects.'],
  ['PATCH', '/v2/images/IMG', [1], V21, 400, 'Operations must be JSON objects.'],
  ['PATCH', '/v2/images/IMG', [{}], V21, 400, 'Unable to find `op` in JSON Schema change. It must be one of the following: add, remove, replace.'],
  ['PATCH', '/v2/images/IMG', [{ op: 5, path: '/name', value: 'x' }], V21, 400, 'Invalid operation: `5`. It must be one of the following: add, remove, replace.'],
  ['PATCH', '/v2/images/IMG', [{ op: 'move', path: '/name', value: 'x' }], V21, 400, 'Invalid operation: `move`. It must be one of the following: add, remove, replace.'],
  ['PATCH', '/v2/images/IMG', [{ op: 'replace', value: 'x' }], V21, 400, "Unable to find 'path' in JSON Schema change"],
  ['PATCH', '/v2/images/IMG', [{ op: 'replace', path: 'name', value: 'x' }], V21, 400, 'Pointer `name` does not start with "/".'],
  ['PATCH', '/v2/images/IMG', [{ op: 'replace', path: '/name' }], V21, 400, 'Operation "replace" requires a member named "value".'],
  ['PATCH', '/v2/images/IMG', [{ op: 'replace', path: '/name', value: 5 }], V21, 400, schema("5 is not of type 'null', 'string'")],
  ['PATCH', '/v2/images/IMG', [{ op: 'add', path: '/foo', value: 5 }], V21, 400, schema("5 is not of type 'string'")],
  ['PATCH', '/v2/images/IMG', [{ op: 'replace', path: '/min_ram', value: -1 }], V21, 400, "Invalid value '-1' for parameter 'min_ram': Cannot be a negative value"],
  ['PATCH', '/v2/images/IMG', [{ op: 'replace', path: '/tags', value: [1] }], V21, 400, schema("1 is not of type 'string'")],
  ['PATCH', '/v2/images/IMG', [{ op: 'replace', path: '/visibility', value: 'x' }], V21, 400, schema("'x' is not one of ['community', 'public', 'private', 'shared']")],
  ['PATCH', '/v2/images/IMG', [{ op: 'replace', path: '/a/b', value: 'x' }], V21, 400, "Invalid JSON pointer for this resource: '/a/b'"],
  // Read-only before the value's schema; operations in order.
  ['PATCH', '/v2/images/IMG', [{ op: 'replace', path: '/status', value: 5 }], V21, 403, "Attribute 'status' is read-only."],
  ['PATCH', '/v2/images/IMG', [{ op: 'replace', path: '/name', value: 5 }, { op: 'replace', path: '/status', value: 'x' }], V21, 400, schema("5 is not of type 'null', 'string'")],
  ['PATCH', '/v2/images/IMG', [{ op: 'replace', path: '/name', value: 'q' }], V20, 400, 'Operation objects must contain exactly one member named "add", "remove", or "replace".'],
  ['PATCH', '/v2/images/IMG', [{ replace: '/name', add: '/x', value: 'q' }], V20, 400, 'Operation objects must contain only one member named "add", "remove", or "replace".'],
  ['PATCH', '/v2/images/IMG', [{ replace: '/min_ram', value: 'q' }], V20, 400, schema("'q' is not of type 'integer'")],
  ['PATCH', '/v2/images/IMG', [{ replace: '/name' }], V20, 400, 'Operation "replace" requires a member named "value".'],

  // --- the list's query string
  ['GET', '/v2/images?limit=abc', undefined, null, 400, 'limit param must be an integer'],
  ['GET', '/v2/images?limit=1.5', undefined, null, 400, 'limit param must be an integer'],
  ['GET', '/v2/images?limit=-1', undefined, null, 400, 'limit param must be positive'],
  ['GET', '/v2/images?sort_key=bad', undefined, null, 400, 'Invalid sort key: bad. It must be one of the following: name, status, container_format, disk_format, size, id, created_at, updated_at.'],
  ['GET', '/v2/images?sort_dir=bad', undefined, null, 400, 'Invalid sort direction: bad'],
  ['GET', '/v2/images?sort=name:up', undefined, null, 400, 'Invalid sort direction: up'],
  ['GET', '/v2/images?sort=bogus', undefined, null, 400, 'Invalid sort key: bogus. It must be one of the following: name, status, container_format, disk_format, size, id, created_at, updated_at.'],
  ['GET', '/v2/images?sort_key=name&sort=name', undefined, null, 400, 'Old and new sorting syntax cannot be combined'],
  ['GET', '/v2/images?visibility=bad', undefined, null, 400, 'Invalid visibility value: bad'],
  ['GET', '/v2/images?member_status=bad', undefined, null, 400, 'Invalid status: bad'],
  ['GET', '/v2/images?size_min=abc', undefined, null, 400, 'Unable to filter on a range with a non-numeric value.'],
  ['GET', '/v2/images?os_hidden=maybe', undefined, null, 400, "Invalid value 'maybe' for 'os_hidden' filter. Valid values are 'true' or 'false'."],
  ['GET', '/v2/images?protected=yes', undefined, null, 400, "Invalid value 'yes' for 'protected' filter. Valid values are 'true' or 'false'."],
  ['GET', '/v2/images?created_at=bad', undefined, null, 400, 'Bad "created_at" query filter format. Use ISO 8601 DateTime notation.'],
  ['GET', '/v2/images?marker=nope', undefined, null, 400, 'No image found with ID nope'],
  // Hostile sizes: more tag filters than an image can have tags, too many filters, long names.
  ['GET', `/v2/images?${Array.from({ length: 129 }, (_, i) => `tag=t${i}`).join('&')}`, undefined, null, 400, "Too many 'tag' parameters: at most 128."],
  ['GET', `/v2/images?${Array.from({ length: 65 }, (_, i) => `p${i}=v`).join('&')}`, undefined, null, 400, 'Too many query parameters: at most 64.'],
  ['GET', `/v2/images?${'k'.repeat(256)}=v`, undefined, null, 400, 'Filter name too long.'],

  // --- members, tags, import
  ['POST', '/v2/images/IMG/members', {}, null, 400, 'Member to be added not specified'],
  ['POST', '/v2/images/IMG/members', { member: '' }, null, 400, "Member can't be empty"],
  ['POST', '/v2/images/IMG/members', [], null, 400, 'Expected a member in the form: {"member": "image_id"}'],
  ['PUT', '/v2/images/IMG/members/p2', {}, null, 400, 'Status not specified'],
  ['PUT', '/v2/images/IMG/members/p2', { status: 5 }, null, 400, 'Incorrect request: Status must be "pending", "accepted" or "rejected".'],
  ['PUT', '/v2/images/IMG/members/p2', { status: 'bogus' }, null, 400, 'Incorrect request: Status must be "pending", "accepted" or "rejected".'],
  ['PUT', `/v2/images/IMG/tags/${'t'.repeat(256)}`, undefined, null, 400, schema(`'${'t'.repeat(256)}' is too long`)],
  ['POST', '/v2/images/IMG/import', {}, null, 400, "Import request requires a 'method' field."],
  ['POST', '/v2/images/IMG/import', { method: { name: 5 } }, null, 400, "Unknown import method name '5'."],
  ['POST', '/v2/images/IMG/import', { method: { name: 'glance-direct' }, all_stores: 'x' }, null, 400, "'all_stores' must be boolean value only"],

  // --- metadata definitions: the schemas served at /v2/schemas/metadefs/* (unknown keys refused)
  ['POST', '/v2/metadefs/namespaces', { namespace: 'ns1', foo: 1 }, null, 400, "Provided object does not match schema 'namespace': Additional properties are not allowed ('foo' was unexpected)"],
  ['POST', '/v2/metadefs/namespaces', { namespace: 5 }, null, 400, "Provided object does not match schema 'namespace': 5 is not of type 'string'"],
  ['POST', '/v2/metadefs/namespaces', {}, null, 400, "Provided object does not match schema 'namespace': 'namespace' is a required property"],
  ['POST', '/v2/metadefs/namespaces', { namespace: 'ns1', visibility: 'x' }, null, 400, "Provided object does not match schema 'namespace': 'x' is not one of ['public', 'private']"],
  ['POST', '/v2/metadefs/namespaces', { namespace: 'n'.repeat(81) }, null, 400, `Provided object does not match schema 'namespace': '${'n'.repeat(81)}' is too long`],
  ['PUT', '/v2/metadefs/namespaces/ns1', { namespace: 'ns1', protected: 'x' }, null, 400, "Provided object does not match schema 'namespace': 'x' is not of type 'boolean'"],
  ['POST', '/v2/metadefs/namespaces/ns1/properties', { name: 'p1', type: 'string' }, null, 400, "Provided object does not match schema 'property': 'title' is a required property"],
  ['POST', '/v2/metadefs/namespaces/ns1/properties', { name: 'p1', title: 't', type: 'bogus' }, null, 400, "Provided object does not match schema 'property': 'bogus' is not one of ['array', 'boolean', 'integer', 'number', 'object', 'string', None]"],
  ['POST', '/v2/metadefs/namespaces/ns1/properties', { name: 'p1', title: 't', type: 'string', extra: 1 }, null, 400, "Provided object does not match schema 'property': Additional properties are not allowed ('extra' was unexpected)"],
  ['POST', '/v2/metadefs/namespaces/ns1/objects', { name: 5 }, null, 400, "Provided object does not match schema 'object': 5 is not of type 'string'"],
  ['POST', '/v2/metadefs/namespaces/ns1/objects', { name: 'o1', properties: { a: { type: 'string' } } }, null, 400, "Provided object does not match schema 'object': 'title' is a required property"],
  ['POST', '/v2/metadefs/namespaces/ns1/objects', { name: 'o1', x: 1 }, null, 400, "Provided object does not match schema 'object': Additional properties are not allowed ('x' was unexpected)"],
  ['POST', '/v2/metadefs/namespaces/ns1/tags', { tags: [{ name: 5 }] }, null, 400, "Provided object does not match schema 'tags': 5 is not of type 'string'"],
  ['POST', '/v2/metadefs/namespaces/ns1/tags', { tags: 'x' }, null, 400, "Provided object does not match schema 'tags': 'x' is not of type 'array'"],
  ['PUT', '/v2/metadefs/namespaces/ns1/tags/t1', { name: 5 }, null, 400, "Provided object does not match schema 'tag': 5 is not of type 'string'"],
  ['POST', '/v2/metadefs/namespaces/ns1/resource_types', { name: 5 }, null, 400, "Provided object does not match schema 'resource_type_association': 5 is not of type 'string'"],
  ['POST', '/v2/metadefs/namespaces/ns1/resource_types', { prefix: 'x' }, null, 400, "Provided object does not match schema 'resource_type_association': 'name' is a required property"],
  ['GET', '/v2/metadefs/namespaces?visibility=bad', undefined, null, 400, 'Invalid visibility value: bad'],
  ['GET', '/v2/metadefs/namespaces?sort_dir=bad', undefined, null, 400, 'Invalid sort direction: bad'],
  ['GET', '/v2/metadefs/namespaces?limit=abc', undefined, null, 400, 'limit param must be an integer'],
];

test("malformed image and metadef requests get Glance's status and message", async (t) => {
  const svc = await startTestService(t);
  const call = api(svc.url, await token(svc.url));
  const created = await call('POST', '/v2/images', { body: { name: 'target' } });
  assert.equal(created.status, 201, created.text);
  const id = created.json.id as string;
  for (const [method, path, body, type, status, message] of cases) {
    const opts = typeof body === 'string' ? { raw: body, type: type ?? 'application/json' } : body === undefined ? {} : { body, ...(type ? { type } : {}) };
    const r = await call(method, path.replace('IMG', id), opts);
    const what = `${method} ${path.slice(0, 80)} ${typeof body === 'string' ? body : JSON.stringify(body ?? '').slice(0, 120)}`;
    assert.equal(r.status, status, `${what}: ${r.text.slice(0, 300)}`);
    assert.equal(r.json?.message, message, what);
  }
  // Nothing was changed by any of them.
  const after = await call('GET', `/v2/images/${id}`);
  assert.equal(after.json.name, 'target');
  assert.deepEqual(after.json.tags, []);
});

test('authentication answers before the body is looked at', async (t) => {
  const svc = await startTestService(t);
  const anon = api(svc.url, null);
  assert.equal((await anon('POST', '/v2/images', { body: { name: 5 } })).status, 401);
  assert.equal((await anon('GET', '/v2/images?limit=abc')).status, 401);
  assert.equal((await anon('PATCH', '/v2/images/x', { body: {}, type: V21 })).status, 401);
});

test('valid spellings Glance accepts pass the schemas', async (t) => {
  const svc = await startTestService(t);
  const call = api(svc.url, await token(svc.url));
  const img = await call('POST', '/v2/images', { body: { name: "it's", min_ram: 0, tags: ['a'], kernel_id: null, os_distro: 'debian' } });
  assert.equal(img.status, 201, img.text);
  for (const q of ['os_hidden=True', 'protected=FALSE', 'size_max=-1', 'limit=1&limit=2', 'sort=name:asc,id', 'sort_key=name,id&sort_dir=asc,desc', 'tag=a&tag=b', 'created_at=gt:2020-01-01', 'foo=bar']) {
    const r = await call('GET', `/v2/images?${q}`);
    assert.equal(r.status, 200, `${q}: ${r.text}`);
  }
  const patched = await call('PATCH', `/v2/images/${img.json.id}`, { body: [{ replace: '/name', value: 'q' }, { add: '/x', value: 'y' }], type: V20 });
  assert.equal(patched.status, 200, patched.text);
  assert.equal(patched.json.name, 'q');
  assert.equal(patched.json.x, 'y');
});

test("malformed identity requests get Keystone's {\"error\": {...}} with its validation sentences", async (t) => {
  const svc = await startTestService(t);
  const call = api(svc.url, await token(svc.url));
  const keystone: [string, string, unknown, string][] = [
    ['POST', '/identity/v3/projects', { project: { name: 5 } }, "Invalid input for field 'name': 5 is not of type 'string'"],
    ['POST', '/identity/v3/projects', { project: {} }, "'name' is a required property"],
    ['POST', '/identity/v3/projects', {}, "'name' is a required property"],
    ['POST', '/identity/v3/projects', { project: 5 }, "5 is not of type 'object'"],
    ['POST', '/identity/v3/projects', { project: { name: 'p'.repeat(65) } }, `Invalid input for field 'name': '${'p'.repeat(65)}' is too long`],
    ['POST', '/identity/v3/projects', { project: { name: 'ok', enabled: 'yes' } }, "Invalid input for field 'enabled': 'yes' is not of type 'boolean'"],
    ['POST', '/identity/v3/projects', { project: { name: 'ok', tags: Array.from({ length: 81 }, (_, i) => `t${i}`) } }, `Invalid input for field 'tags': [${Array.from({ length: 81 }, (_, i) => `'t${i}'`).join(', ')}] is too long`],
    ['PATCH', '/identity/v3/projects/x', { project: {} }, '{} does not have enough properties'],
    ['POST', '/identity/v3/users', { user: { name: '' } }, "Invalid input for field 'name': '' is too short"],
    ['POST', '/identity/v3/users', { user: { name: 'u1', default_project_id: 'bad id!' } }, "Invalid input for field 'default_project_id': 'bad id!' does not match '^[a-zA-Z0-9-]+$'"],
    ['POST', '/identity/v3/roles', { role: { name: '   ' } }, "Invalid input for field 'name': '   ' does not match '[\\\\S]+'"],
    ['POST', '/identity/v3/auth/tokens', { auth: { identity: { methods: 'password' } } }, "Invalid input for field 'identity/methods': 'password' is not of type 'array'"],
    ['POST', '/identity/v3/auth/tokens', { auth: { identity: {} } }, "Invalid input for field 'identity': 'methods' is a required property"],
    ['POST', '/identity/v3/auth/tokens', { auth: { identity: { methods: ['password'], password: { user: { name: 5, password: 'x' } } } } }, "Invalid input for field 'identity/password/user/name': 5 is not of type 'string'"],
    ['POST', '/identity/v3/auth/tokens', {}, 'Expecting to find auth in request body.'],
  ];
  for (const [method, path, body, message] of keystone) {
    const r = await call(method, path, { body });
    assert.deepEqual(r.json, { error: { code: 400, message, title: 'Bad Request' } }, `${method} ${path} ${JSON.stringify(body).slice(0, 100)}`);
  }
  // Valid bodies still work: a project, a user in it, and a token for that user.
  const p = await call('POST', '/identity/v3/projects', { body: { project: { name: 'valid-p', description: null } } });
  assert.equal(p.status, 201, p.text);
  const u = await call('POST', '/identity/v3/users', { body: { user: { name: 'valid-u', password: 'pw', default_project_id: p.json.project.id, email: null } } });
  assert.equal(u.status, 201, u.text);
});
