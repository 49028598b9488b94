/**
 * The Swift store's configuration, with Glance's option names: the account reference's
 * (glance-swift.conf: auth_address, auth_version, user, key, user_domain_id, project_domain_id)
 * and the backend's swift_store_* options; sizes in MB as Glance counts them.
 */
import { stringOption, StoreConfigError, type StoreFactory } from '../registry.js';
import { boolOption, checkOptionNames, numberOption } from '../option-values.js';
import { SwiftStore } from './swift-store.js';

const MiB = 1 << 20;
const OPTIONS = [
  'auth_address', 'auth_version', 'user', 'key', 'user_domain_id', 'project_domain_id', 'timeout',
  'swift_store_container', 'swift_store_multiple_containers_seed', 'swift_store_create_container_on_put',
  'swift_store_large_object_size', 'swift_store_large_object_chunk_size', 'swift_store_retry_get_count',
  'swift_store_region', 'swift_store_endpoint_type', 'swift_store_service_type', 'swift_store_endpoint', 'swift_store_auth_insecure',
] as const;

export const swiftStoreFactory: StoreFactory = (spec) => {
  checkOptionNames(spec, OPTIONS);
  const authVersion = stringOption(spec, 'auth_version') ?? '3';
  if (authVersion !== '1' && authVersion !== '3') throw new StoreConfigError(`store '${spec.id}' (swift): auth_version must be 1 (tempauth) or 3 (Keystone v3)`);
  const mb = (name: string) => { const n = numberOption(spec, name, 1); return n === undefined ? undefined : n * MiB; };
  return new SwiftStore(spec.id, {
    authAddress: stringOption(spec, 'auth_address', true),
    authVersion,
    user: stringOption(spec, 'user', true),
    key: stringOption(spec, 'key', true),
    userDomainId: stringOption(spec, 'user_domain_id'),
    projectDomainId: stringOption(spec, 'project_domain_id'),
    timeoutMs: (numberOption(spec, 'timeout', 1) ?? 60) * 1000,
    container: stringOption(spec, 'swift_store_container'),
    multipleContainersSeed: numberOption(spec, 'swift_store_multiple_containers_seed'),
    createContainerOnPut: boolOption(spec, 'swift_store_create_container_on_put'),
    largeObjectSize: mb('swift_store_large_object_size'),
    largeObjectChunkSize: mb('swift_store_large_object_chunk_size'),
    retryGetCount: numberOption(spec, 'swift_store_retry_get_count'),
    region: stringOption(spec, 'swift_store_region'),
    endpointType: stringOption(spec, 'swift_store_endpoint_type'),
    serviceType: stringOption(spec, 'swift_store_service_type'),
    endpoint: stringOption(spec, 'swift_store_endpoint'),
    insecure: boolOption(spec, 'swift_store_auth_insecure'),
  }, stringOption(spec, 'description'));
};
