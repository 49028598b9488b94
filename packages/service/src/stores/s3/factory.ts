/** The S3 store's configuration, with Glance's s3_store_* option names; sizes in MB as Glance counts them. */
import { stringOption, StoreConfigError, type StoreFactory } from '../registry.js';
import { boolOption, checkOptionNames, numberOption } from '../option-values.js';
import { S3Store } from './s3-store.js';

const MiB = 1 << 20;
const OPTIONS = [
  's3_store_host', 's3_store_access_key', 's3_store_secret_key', 's3_store_bucket', 's3_store_region_name',
  's3_store_create_bucket_on_put', 's3_store_bucket_url_format', 's3_store_large_object_size',
  's3_store_large_object_chunk_size', 's3_store_thread_pools', 'timeout',
] as const;

export const s3StoreFactory: StoreFactory = (spec) => {
  checkOptionNames(spec, OPTIONS);
  const format = stringOption(spec, 's3_store_bucket_url_format') ?? 'auto';
  if (format !== 'auto' && format !== 'path' && format !== 'virtual') throw new StoreConfigError(`store '${spec.id}' (s3): s3_store_bucket_url_format must be auto, path or virtual`);
  const mb = (name: string) => { const n = numberOption(spec, name, 1); return n === undefined ? undefined : n * MiB; };
  return new S3Store(spec.id, {
    host: stringOption(spec, 's3_store_host', true),
    accessKey: stringOption(spec, 's3_store_access_key', true),
    secretKey: stringOption(spec, 's3_store_secret_key', true),
    bucket: stringOption(spec, 's3_store_bucket', true),
    region: stringOption(spec, 's3_store_region_name'),
    createBucketOnPut: boolOption(spec, 's3_store_create_bucket_on_put'),
    bucketUrlFormat: format,
    largeObjectSize: mb('s3_store_large_object_size'),
    largeObjectChunkSize: mb('s3_store_large_object_chunk_size'),
    threadPools: numberOption(spec, 's3_store_thread_pools', 1),
    timeoutMs: (numberOption(spec, 'timeout', 1) ?? 60) * 1000,
  }, stringOption(spec, 'description'));
};
