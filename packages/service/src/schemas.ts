/**
 * The JSON schemas served at /v2/schemas/*. Clients (glanceclient, openstacksdk) validate
 * requests against them and use `additionalProperties` and `readOnly` to decide what they
 * may send, so property names, types, enums, patterns and flags follow Glance's; the prose
 * is ours.
 */
export const UUID_PATTERN = '^([0-9a-fA-F]){8}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){12}$';

export const STATUSES = ['queued', 'saving', 'active', 'killed', 'deleted', 'uploading', 'importing', 'pending_delete', 'deactivated'] as const;
export const VISIBILITIES = ['community', 'public', 'private', 'shared'] as const;
export const CONTAINER_FORMATS = ['ami', 'ari', 'aki', 'bare', 'ovf', 'ova', 'docker', 'compressed'] as const;
export const DISK_FORMATS = ['ami', 'ari', 'aki', 'vhd', 'vhdx', 'vmdk', 'raw', 'qcow2', 'vdi', 'iso', 'ploop'] as const;

const nullable = (type: string) => ['null', type];

export function imageSchema(): Record<string, unknown> {
  const extra = (description: string, more: Record<string, unknown> = {}) => ({ description, type: 'string', ...more, is_base: false });
  return {
    name: 'image',
    properties: {
      id: { type: 'string', description: 'Image identifier (a UUID)', pattern: UUID_PATTERN },
      name: { type: nullable('string'), description: 'Name of the image', maxLength: 255 },
      status: { type: 'string', readOnly: true, description: 'Where the image is in its lifecycle', enum: [...STATUSES] },
      visibility: { type: 'string', description: 'Who can see the image', enum: [...VISIBILITIES] },
      protected: { type: 'boolean', description: 'A protected image cannot be deleted' },
      os_hidden: { type: 'boolean', description: 'Hidden images are left out of default listings' },
      checksum: { type: nullable('string'), readOnly: true, description: 'MD5 of the image data', maxLength: 32 },
      os_hash_algo: { type: nullable('string'), readOnly: true, description: 'Algorithm of os_hash_value', maxLength: 64 },
      os_hash_value: { type: nullable('string'), readOnly: true, description: 'Hex digest of the image data (os_hash_algo)', maxLength: 128 },
      owner: { type: nullable('string'), description: 'Project that owns the image', maxLength: 255 },
      size: { type: nullable('integer'), readOnly: true, description: 'Size of the image data in bytes' },
      virtual_size: { type: nullable('integer'), readOnly: true, description: 'Size of the virtual disk in bytes' },
      container_format: { type: nullable('string'), description: 'Container format of the image data', enum: [null, ...CONTAINER_FORMATS] },
      disk_format: { type: nullable('string'), description: 'Disk format of the image data', enum: [null, ...DISK_FORMATS] },
      created_at: { type: 'string', readOnly: true, description: 'When the image was registered' },
      updated_at: { type: 'string', readOnly: true, description: 'When the image last changed' },
      tags: { type: 'array', description: 'Free-form labels', items: { type: 'string', maxLength: 255 } },
      direct_url: { type: 'string', readOnly: true, description: 'Where the data is kept in the store' },
      min_ram: { type: 'integer', description: 'RAM in MiB needed to boot the image' },
      min_disk: { type: 'integer', description: 'Disk in GiB needed to boot the image' },
      self: { type: 'string', readOnly: true, description: 'URL of this image' },
      file: { type: 'string', readOnly: true, description: 'URL of the image data' },
      stores: { type: 'string', readOnly: true, description: 'Comma-separated stores holding the data' },
      schema: { type: 'string', readOnly: true, description: 'URL of this schema' },
      locations: {
        type: 'array',
        items: {
          type: 'object',
          properties: {
            url: { type: 'string', maxLength: 255 },
            metadata: { type: 'object' },
            validation_data: {
              description: 'Checksums the location data must match',
              type: 'object', writeOnly: true, additionalProperties: false,
              properties: {
                checksum: { type: 'string', minLength: 32, maxLength: 32 },
                os_hash_algo: { type: 'string', maxLength: 64 },
                os_hash_value: { type: 'string', maxLength: 128 },
              },
              required: ['os_hash_algo', 'os_hash_value'],
            },
          },
          required: ['url', 'metadata'],
        },
        description: 'Where the data is kept in external stores',
      },
      kernel_id: { type: nullable('string'), pattern: UUID_PATTERN, description: 'Image to use as the kernel of an AMI-style image', is_base: false },
      ramdisk_id: { type: nullable('string'), pattern: UUID_PATTERN, description: 'Image to use as the ramdisk of an AMI-style image', is_base: false },
      instance_uuid: extra('Instance this image was made from (informational)'),
      architecture: extra('CPU architecture the image needs'),
      os_distro: extra('Operating system distribution, in lower case'),
      os_version: extra('Operating system version'),
      description: extra('Free text about the image'),
      cinder_encryption_key_id: extra('Key manager id of the volume encryption key'),
      cinder_encryption_key_deletion_policy: extra('When the encryption key is deleted', { enum: ['on_image_deletion', 'do_not_delete'] }),
    },
    additionalProperties: { type: 'string' },
    links: [
      { rel: 'self', href: '{self}' },
      { rel: 'enclosure', href: '{file}' },
      { rel: 'describedby', href: '{schema}' },
    ],
  };
}

export function imagesSchema(): Record<string, unknown> {
  return {
    name: 'images',
    properties: {
      images: { type: 'array', items: imageSchema() },
      first: { type: 'string' },
      next: { type: 'string' },
      schema: { type: 'string' },
    },
    links: [
      { rel: 'first', href: '{first}' },
      { rel: 'next', href: '{next}' },
      { rel: 'describedby', href: '{schema}' },
    ],
  };
}

export function memberSchema(): Record<string, unknown> {
  return {
    name: 'member',
    properties: {
      member_id: { type: 'string', description: 'Project the image is shared with' },
      image_id: { type: 'string', description: 'The shared image', pattern: UUID_PATTERN },
      created_at: { type: 'string', description: 'When the membership was created' },
      updated_at: { type: 'string', description: 'When the membership last changed' },
      status: { type: 'string', description: "The member's answer", enum: ['pending', 'accepted', 'rejected'] },
      schema: { readOnly: true, type: 'string' },
    },
  };
}

export function membersSchema(): Record<string, unknown> {
  return {
    name: 'members',
    properties: { members: { type: 'array', items: memberSchema() }, schema: { type: 'string' } },
    links: [{ rel: 'describedby', href: '{schema}' }],
  };
}

// --- metadata definitions (/v2/schemas/metadefs/*): same structure and constraints as Glance's.
const TYPES = ['array', 'boolean', 'integer', 'number', 'object', 'string', null];
const created = { type: 'string', readOnly: true, description: 'Creation time', format: 'date-time' };
const updated = { type: 'string', readOnly: true, description: 'Last modification time', format: 'date-time' };
const definitions = {
  positiveInteger: { type: 'integer', minimum: 0 },
  positiveIntegerDefault0: { allOf: [{ $ref: '#/definitions/positiveInteger' }, { default: 0 }] },
  stringArray: { type: 'array', items: { type: 'string' }, uniqueItems: true },
};
function propertyBody(): Record<string, unknown> {
  return {
    name: { type: 'string', maxLength: 80 }, title: { type: 'string' }, description: { type: 'string' },
    operators: { type: 'array', items: { type: 'string' } }, type: { type: 'string', enum: TYPES },
    required: { $ref: '#/definitions/stringArray' }, minimum: { type: 'number' }, maximum: { type: 'number' },
    maxLength: { $ref: '#/definitions/positiveInteger' }, minLength: { $ref: '#/definitions/positiveIntegerDefault0' },
    pattern: { type: 'string', format: 'regex' }, enum: { type: 'array' }, readonly: { type: 'boolean' }, default: {},
    items: { type: 'object', properties: { type: { type: 'string', enum: TYPES }, enum: { type: 'array' } } },
    maxItems: { $ref: '#/definitions/positiveInteger' }, minItems: { $ref: '#/definitions/positiveIntegerDefault0' },
    uniqueItems: { type: 'boolean', default: false }, additionalItems: { type: 'boolean' },
  };
}
const propertyMap = { type: 'object', additionalProperties: { type: 'object', required: ['title', 'type'], properties: propertyBody() } };
const listOf = (name: string, key: string, item: Record<string, unknown>, extra: Record<string, unknown> = {}) => ({
  name, properties: { [key]: { type: 'array', items: item }, first: { type: 'string' }, next: { type: 'string' }, schema: { type: 'string' } },
  links: [{ rel: 'first', href: '{first}' }, { rel: 'next', href: '{next}' }, { rel: 'describedby', href: '{schema}' }], ...extra,
});

export function metadefSchemas(): Record<string, Record<string, unknown>> {
  const association = {
    name: 'resource_type_association',
    properties: { name: { type: 'string', description: 'Resource type name', maxLength: 80 }, prefix: { type: 'string', description: 'Prefix of the properties for this resource type', maxLength: 80 }, properties_target: { type: 'string', description: 'Which metadata of the resource the properties apply to', maxLength: 80 }, created_at: created, updated_at: updated },
    additionalProperties: false, required: ['name'],
  };
  const object = {
    name: 'object',
    properties: { name: { type: 'string', maxLength: 80 }, description: { type: 'string' }, required: { $ref: '#/definitions/stringArray' }, properties: { $ref: '#/definitions/property' }, schema: { readOnly: true, type: 'string' }, self: { readOnly: true, type: 'string' }, created_at: created, updated_at: updated },
    additionalProperties: false, required: ['name'], definitions: { ...definitions, property: propertyMap },
  };
  const tag = { name: 'tag', properties: { name: { type: 'string', maxLength: 80 }, created_at: created, updated_at: updated }, additionalProperties: false, required: ['name'] };
  const namespace = {
    name: 'namespace',
    properties: {
      namespace: { type: 'string', description: 'Unique namespace name', maxLength: 80 },
      display_name: { type: 'string', description: 'Name shown to people', maxLength: 80 },
      description: { type: 'string', description: 'What the namespace is for', maxLength: 500 },
      visibility: { type: 'string', description: 'Who can see it', enum: ['public', 'private'] },
      protected: { type: 'boolean', description: 'A protected namespace cannot be deleted' },
      owner: { type: 'string', description: 'Owning project', maxLength: 255 },
      created_at: created, updated_at: updated,
      schema: { readOnly: true, type: 'string' }, self: { readOnly: true, type: 'string' },
      resource_type_associations: { type: 'array', items: { type: 'object', properties: { name: { type: 'string' }, prefix: { type: 'string' }, properties_target: { type: 'string' } } } },
      properties: { $ref: '#/definitions/property' },
      objects: { type: 'array', items: { type: 'object', properties: { name: { type: 'string' }, description: { type: 'string' }, required: { $ref: '#/definitions/stringArray' }, properties: { $ref: '#/definitions/property' } } } },
      tags: { type: 'array', items: { type: 'object', properties: { name: { type: 'string' } } } },
    },
    additionalProperties: false, required: ['namespace'], definitions: { ...definitions, property: propertyMap },
  };
  const property = { name: 'property', properties: propertyBody(), additionalProperties: false, definitions: { ...definitions, stringArray: { ...definitions.stringArray, minItems: 1 } }, required: ['type', 'title', 'name'] };
  return {
    namespace,
    namespaces: listOf('namespaces', 'namespaces', namespace, { definitions: namespace.definitions }),
    property,
    properties: {
      name: 'properties',
      properties: { properties: { type: 'object', additionalProperties: { ...property, required: ['type', 'title'] } }, first: { type: 'string' }, next: { type: 'string' }, schema: { type: 'string' } },
      links: [{ rel: 'first', href: '{first}' }, { rel: 'next', href: '{next}' }, { rel: 'describedby', href: '{schema}' }],
      definitions: property.definitions,
    },
    object,
    objects: listOf('objects', 'objects', object, { definitions: object.definitions }),
    resource_type: association,
    resource_types: listOf('resource_type_associations', 'resource_type_associations', association),
    tag,
    tags: listOf('tags', 'tags', tag),
  };
}
