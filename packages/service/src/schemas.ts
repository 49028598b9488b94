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
