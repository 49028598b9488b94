/**
 * Request validation as the route modules use it: bodies and query strings are checked by
 * Fastify's JSON-schema validation (Ajv) against schemas the routes declare, with
 * `attachValidation` so that authentication still answers first (Glance and Keystone answer
 * 401 before they look at a body). A route then turns the first schema error into the
 * answer its peer gives: Glance's jsonschema sentences ("Provided object does not match
 * schema 'image': 5 is not of type 'string'"), or the message Glance's hand-written check has
 * for that parameter ("limit param must be an integer").
 */
import type { FastifyRequest } from 'fastify';
import { jsonBody } from '../http.js';

/** One Ajv error, as Fastify attaches it. */
export interface SchemaError {
  keyword: string;
  instancePath: string;
  schemaPath: string;
  params: Record<string, any>;
}

/** The first error of the request part's validation, or null when that part is valid. */
export function firstError(request: FastifyRequest, part: 'body' | 'querystring' | 'params'): SchemaError | null {
  const e = request.validationError as (Error & { validation?: SchemaError[]; validationContext?: string }) | undefined;
  if (!e || e.validationContext !== part) return null;
  return e.validation?.[0] ?? null;
}

/**
 * The JSON body and its first schema error. A body that Fastify's JSON parser did not read
 * (another media type, which Glance's deserializer reads as JSON too) is checked here
 * against the same compiled schema.
 */
export async function checkedBody(request: FastifyRequest): Promise<{ body: unknown; error: SchemaError | null }> {
  const body = await jsonBody(request);
  if (request.bodyRead) return { body, error: firstError(request, 'body') };
  const validate = request.getValidationFunction('body') as ((v: unknown) => boolean) & { errors?: SchemaError[] | null } | undefined;
  if (typeof validate !== 'function' || validate(body)) return { body, error: null };
  return { body, error: validate.errors?.[0] ?? null };
}

/** Python's str() of a value, as Glance's messages interpolate it. */
export const pyStr = (v: unknown): string => (typeof v === 'string' ? v : pyRepr(v));

/** The value an error's instancePath points at (RFC 6901). */
export function valueAt(root: unknown, pointer: string): unknown {
  let v = root;
  for (const raw of pointer.split('/').slice(1)) {
    const key = raw.replace(/~1/g, '/').replace(/~0/g, '~');
    v = v !== null && typeof v === 'object' ? (v as Record<string, unknown>)[key] : undefined;
  }
  return v;
}

/** The first segment of an error's path: for a query string, the parameter's name. */
export const topKey = (e: SchemaError): string => {
  const first = e.instancePath.split('/')[1];
  if (first !== undefined) return first.replace(/~1/g, '/').replace(/~0/g, '~');
  if (e.keyword === 'required') return e.params.missingProperty as string;
  if (e.keyword === 'additionalProperties') return e.params.additionalProperty as string;
  return '';
};

/** Python's repr() of a JSON value, as jsonschema's messages print instances. */
export function pyRepr(v: unknown): string {
  if (v === null || v === undefined) return 'None';
  if (v === true) return 'True';
  if (v === false) return 'False';
  if (typeof v === 'number') return String(v);
  if (typeof v === 'string') {
    const quote = v.includes("'") && !v.includes('"') ? '"' : "'";
    let out = '';
    for (const ch of v) {
      const c = ch.codePointAt(0)!;
      if (ch === '\\') out += '\\\\';
      else if (ch === quote) out += `\\${quote}`;
      else if (ch === '\n') out += '\\n';
      else if (ch === '\r') out += '\\r';
      else if (ch === '\t') out += '\\t';
      else if (c < 0x20 || (c >= 0x7f && c < 0xa0)) out += `\\x${c.toString(16).padStart(2, '0')}`;
      else out += ch;
    }
    return quote + out + quote;
  }
  if (Array.isArray(v)) return `[${v.map(pyRepr).join(', ')}]`;
  return `{${Object.entries(v as Record<string, unknown>).map(([k, x]) => `${pyRepr(k)}: ${pyRepr(x)}`).join(', ')}}`;
}

/** python-jsonschema 4's sentence for an error (what Glance puts after "Provided object does not match schema"). */
export function jsonschemaMessage(e: SchemaError, root: unknown): string {
  const instance = valueAt(root, e.instancePath);
  const p = e.params;
  switch (e.keyword) {
    case 'type': return `${pyRepr(instance)} is not of type ${String(p.type).split(',').map((t) => `'${t}'`).join(', ')}`;
    case 'enum': return `${pyRepr(instance)} is not one of ${pyRepr(p.allowedValues)}`;
    case 'const': return `${pyRepr(p.allowedValue)} was expected`;
    case 'maxLength': case 'maxItems': return `${pyRepr(instance)} is too long`;
    case 'minLength': case 'minItems': return `${pyRepr(instance)} is too short`;
    case 'maxProperties': return `${pyRepr(instance)} has too many properties`;
    case 'minProperties': return `${pyRepr(instance)} does not have enough properties`;
    case 'pattern': return `${pyRepr(instance)} does not match ${pyRepr(p.pattern)}`;
    case 'format': return `${pyRepr(instance)} is not a ${pyRepr(p.format)}`;
    case 'required': return `${pyRepr(p.missingProperty)} is a required property`;
    case 'additionalProperties': return `Additional properties are not allowed (${pyRepr(p.additionalProperty)} was unexpected)`;
    case 'minimum': return `${pyRepr(instance)} is less than the minimum of ${pyRepr(p.limit)}`;
    case 'maximum': return `${pyRepr(instance)} is greater than the maximum of ${pyRepr(p.limit)}`;
    case 'uniqueItems': return `${pyRepr(instance)} has non-unique elements`;
    default: return `${pyRepr(instance)} is not valid under the given schema`;
  }
}

/**
 * A schema served at /v2/schemas/* as requests are validated against it (Glance validates
 * bodies against the very schemas it serves): an object, without the served document's
 * `name` and `links` (which are not validation keywords).
 */
export function requestSchema(served: Record<string, unknown>): Record<string, any> {
  return { type: 'object', ...withoutDocumentKeys(served) as object };
}

/** A schema without `name`/`links` wherever a served document nests another (a list's items). */
function withoutDocumentKeys(node: unknown, isSchemaMap = false): unknown {
  if (Array.isArray(node)) return node.map((x) => withoutDocumentKeys(x));
  if (node === null || typeof node !== 'object') return node;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(node)) {
    if (!isSchemaMap && (k === 'links' || k === 'name' && typeof v === 'string')) continue;
    out[k] = withoutDocumentKeys(v, !isSchemaMap && (k === 'properties' || k === 'definitions' || k === 'patternProperties'));
  }
  return out;
}

/**
 * A query-string parameter that may be given once or repeated: Fastify's parser makes a
 * repeated one an array. `maxItems` bounds how many times (a hostile list of thousands of
 * filters would otherwise become thousands of SQL conditions).
 */
export function oneOrMany(value: Record<string, unknown>, maxItems = 32): Record<string, unknown> {
  return { anyOf: [value, { type: 'array', items: value, maxItems }] };
}
