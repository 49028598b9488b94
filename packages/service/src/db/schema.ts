/**
 * The tables of the image service, as Kysely types. Portable column choices (one schema for
 * SQLite, PostgreSQL and MariaDB): timestamps are ISO-8601 UTC strings (they sort as text),
 * booleans are 0/1 integers, sizes are BIGINT (PostgreSQL hands those back as strings, so
 * readers go through `num()`).
 */
export interface ImagesTable {
  id: string;
  name: string | null;
  disk_format: string | null;
  container_format: string | null;
  size: number | string | null;
  virtual_size: number | string | null;
  status: string;
  visibility: string;
  protected: number;
  os_hidden: number;
  checksum: string | null;
  os_hash_algo: string | null;
  os_hash_value: string | null;
  min_disk: number;
  min_ram: number;
  owner: string | null;
  created_at: string;
  updated_at: string;
  /** Bumped on every change: updates are compare-and-set on it, so concurrent nodes never lose writes. */
  revision: number;
  deleted: number;
  deleted_at: string | null;
}

/**
 * Where an image's data is (Glance's image_locations): a URL in one of the configured stores
 * (or, for locations added through the API, any store's), in the order downloads try them.
 */
export interface ImageLocationsTable {
  id: string;
  image_id: string;
  url: string;
  /** The configured store holding it (its metadata's `store`). */
  store_id: string | null;
  /** active; pending_delete / deleted once the data is (to be) removed. */
  status: string;
  /** JSON object: the location's metadata as the API shows it ({"store": id, ...}). */
  metadata: string;
  position: number;
  created_at: string;
  updated_at: string;
}

export interface ImagePropertiesTable {
  image_id: string;
  name: string;
  value: string;
}

export interface ImageTagsTable {
  image_id: string;
  value: string;
}

export interface ImageMembersTable {
  image_id: string;
  member: string;
  status: string;
  created_at: string;
  updated_at: string;
}

export interface DomainsTable { id: string; name: string; enabled: number; description: string | null }
export interface ProjectsTable { id: string; name: string; domain_id: string; enabled: number; description: string | null; created_at: string }
export interface UsersTable {
  id: string; name: string; domain_id: string; enabled: number; password_hash: string | null;
  default_project_id: string | null; email: string | null; created_at: string;
  /** Consecutive failed password checks and when the last one was (ms; Keystone's lockout). */
  failed_auth_count?: number; failed_auth_at?: number | string | null;
  /** Tokens issued at or before this instant (ms) are revoked: the password changed or the user was disabled. */
  tokens_revoked_before?: number | string | null;
}
export interface RolesTable { id: string; name: string }
export interface RoleAssignmentsTable { user_id: string; project_id: string; role_id: string }
export interface RevokedTokensTable { audit_id: string; expires_at: string }
/** Node-independent settings (the token signing key); shared by every API node through the database. */
export interface SettingsTable { name: string; value: string }
/** A record per in-flight upload: who is writing and since when, so a restart can clean up after a crash. */
export interface UploadsTable { image_id: string; node: string; temp_key: string; started_at: string }
/** A scrubber's lease on a pending_delete image (delayed delete): which node removes its data, until when (ms). */
export interface ImageScrubsTable { image_id: string; node: string; lease_until: number | string; started_at: string }

/** Glance's task and task_info rows as one, with the lease of the node running it (domain/tasks.ts). */
export interface TasksTable {
  id: string; type: string; status: string; owner: string | null; image_id: string | null;
  request_id: string | null; user_id: string | null;
  /** JSON objects (Glance's task_info.input / result); message is plain text. */
  input: string | null; result: string | null; message: string | null;
  expires_at: string | null; created_at: string; updated_at: string; deleted: number; deleted_at: string | null;
  /** The node holding the lease, and until when (ms since the epoch); null when nobody runs it. */
  node: string | null; lease_until: number | string | null;
  /** Bytes the current run has moved. */
  progress: number | string;
  /** Runs started (claims); a task that keeps losing its node is failed instead of retried forever. */
  attempts: number;
  /** The worker_self_reference_url of the only node that may claim the task (the glance-direct import's stage host); null: any node. */
  stage_host: string | null;
}

/** An API node's heartbeat: its name, its worker_self_reference_url (null: none), until when (ms since the epoch) it counts as running. */
export interface ApiNodesTable { node: string; url: string | null; alive_until: number | string }

export interface MetadefNamespacesTable {
  namespace: string; owner: string | null; visibility: string; protected: number; display_name: string | null; description: string | null;
  /** JSON: { properties, objects, tags, resource_type_associations } */
  document: string; created_at: string; updated_at: string; revision: number;
}
export interface MetadefResourceTypesTable { name: string; protected: number; created_at: string; updated_at: string }

export interface Database {
  images: ImagesTable;
  image_properties: ImagePropertiesTable;
  image_locations: ImageLocationsTable;
  image_tags: ImageTagsTable;
  image_members: ImageMembersTable;
  domains: DomainsTable;
  projects: ProjectsTable;
  users: UsersTable;
  roles: RolesTable;
  role_assignments: RoleAssignmentsTable;
  revoked_tokens: RevokedTokensTable;
  settings: SettingsTable;
  uploads: UploadsTable;
  tasks: TasksTable;
  image_scrubs: ImageScrubsTable;
  api_nodes: ApiNodesTable;
  metadef_namespaces: MetadefNamespacesTable;
  metadef_resource_types: MetadefResourceTypesTable;
}

/** BIGINT columns come back as strings from pg; numbers elsewhere. */
export function num(v: number | string | bigint | null | undefined): number | null {
  if (v === null || v === undefined) return null;
  return typeof v === 'number' ? v : Number(v);
}
