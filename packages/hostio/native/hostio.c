/*
 * hostio: the few Linux file calls Node.js does not expose and a disk image engine needs.
 *   lseek(SEEK_DATA / SEEK_HOLE)  - find a sparse file's data without reading its holes
 *                                   (what qemu-img's file driver uses for block status);
 *   fallocate(PUNCH_HOLE)         - turn a zeroed range back into a hole;
 *   fallocate(ZERO_RANGE)         - zero a range without writing it;
 *   fallocate(0)                  - preallocate (qemu-img's preallocation=falloc);
 *   fallocate(KEEP_SIZE), async   - reserve blocks just before a large write (reserve);
 *   pread, async                  - read into a buffer on a libuv worker thread (read);
 *   copy_file_range, async        - copy a range between two files inside the kernel
 *                                   (qemu-img convert -C; copyRange, see below);
 *   pageOffset(view)              - where a typed array's bytes start within a memory page,
 *                                   so I/O buffers can be page-aligned as qemu-img's are;
 *   zeroBlock(view, from, size)   - the first all-zero block of a buffer (convert's -S scan);
 *   openWriter / writerWrite /    - a file's writes made one after another, in the order
 *   closeWriter                     they were queued, on a thread of their own (see below);
 *   inflateRaw                    - raw deflate streams inflated on a libuv worker thread
 *                                   (compressed qcow2 clusters; see below);
 *   xtsSectors                    - AES-XTS over 512-byte sectors on a libuv worker thread
 *                                   (LUKS payloads; see below);
 *   digestOpen / digestUpdate /   - md5 / sha512 of a stream, each update on a libuv worker
 *   digestFinal                     thread (upload checksums; see below).
 * All calls but read, reserve, copyRange, dropCleanCache, the writer, inflateRaw, xtsSectors and digestUpdate are synchronous: they touch metadata only and return in microseconds
 * on local filesystems. Offsets travel as JavaScript numbers (exact up to 2^53).
 * Errors are thrown as Error objects whose `code` is the errno name (ENXIO, EOPNOTSUPP, ...).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <limits.h>
#include <pthread.h>
#include <dlfcn.h>
#include <sys/uio.h>
#include <sys/syscall.h>
#include <linux/falloc.h>
#include <node_api.h>
#include <zlib.h> /* Node.js's own zlib: its headers ship with Node and the node binary exports it */

static const char *errno_name(int e) {
  switch (e) {
    case EBADF: return "EBADF";
    case EINVAL: return "EINVAL";
    case ENXIO: return "ENXIO";
    case EOPNOTSUPP: return "EOPNOTSUPP";
    case ENOSPC: return "ENOSPC";
    case EIO: return "EIO";
    case EFBIG: return "EFBIG";
    case ENODEV: return "ENODEV";
    case ESPIPE: return "ESPIPE";
    case EPERM: return "EPERM";
    case EROFS: return "EROFS";
    case EXDEV: return "EXDEV";
    case ENOSYS: return "ENOSYS";
    case ENOENT: return "ENOENT";
    case ENOTDIR: return "ENOTDIR";
    case EISDIR: return "EISDIR";
    case EACCES: return "EACCES";
    case EBUSY: return "EBUSY";
    case ENAMETOOLONG: return "ENAMETOOLONG";
    default: return "EIO";
  }
}

/* An Error "what: strerror(e)" (just strerror(e) without `what`) whose `code` is the errno name. */
static napi_value errno_error(napi_env env, const char *what, int e) {
  char msg[160];
  if (what) snprintf(msg, sizeof msg, "%s: %s", what, strerror(e));
  else snprintf(msg, sizeof msg, "%s", strerror(e));
  napi_value code, text, error;
  napi_create_string_utf8(env, errno_name(e), NAPI_AUTO_LENGTH, &code);
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &text);
  napi_create_error(env, code, text, &error);
  return error;
}

static napi_value throw_oom(napi_env env) {
  napi_throw_error(env, "ENOMEM", "hostio: out of memory");
  return NULL;
}

static napi_value throw_errno(napi_env env, const char *what) {
  napi_throw(env, errno_error(env, what, errno));
  return NULL;
}

/* Reads `want` numeric arguments; the first is an fd (int), the rest are offsets/lengths. */
static int get_args(napi_env env, napi_callback_info info, size_t want, int *fd, double *nums) {
  napi_value argv[4];
  size_t argc = 4;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < want) {
    napi_throw_type_error(env, NULL, "hostio: wrong number of arguments");
    return 0;
  }
  if (napi_get_value_int32(env, argv[0], fd) != napi_ok) {
    napi_throw_type_error(env, NULL, "hostio: fd must be a number");
    return 0;
  }
  for (size_t i = 1; i < want; i++) {
    if (napi_get_value_double(env, argv[i], &nums[i - 1]) != napi_ok || nums[i - 1] < 0 ||
        nums[i - 1] > 9007199254740992.0) {
      napi_throw_range_error(env, NULL, "hostio: offsets and lengths must be non-negative safe integers");
      return 0;
    }
  }
  return 1;
}

static napi_value number(napi_env env, double v) {
  napi_value r;
  napi_create_double(env, v, &r);
  return r;
}

/* Element i of `array` if it is a Uint8Array: its value, its bytes and their number. */
static int uint8_element(napi_env env, napi_value array, uint32_t i, napi_value *view, void **data, size_t *length) {
  napi_typedarray_type type;
  return napi_get_element(env, array, i, view) == napi_ok &&
         napi_get_typedarray_info(env, *view, &type, length, data, NULL, NULL) == napi_ok && type == napi_uint8_array;
}

/* seek(fd, offset, whence): the next data (whence 0) or hole (whence 1) at or after offset;
 * -1 when there is no data at or after offset (ENXIO). */
static napi_value seek(napi_env env, napi_callback_info info) {
  int fd;
  double nums[2];
  if (!get_args(env, info, 3, &fd, nums)) return NULL;
  int whence = nums[1] == 0 ? SEEK_DATA : SEEK_HOLE;
  off_t r = lseek(fd, (off_t)nums[0], whence);
  if (r < 0) {
    if (errno == ENXIO) return number(env, -1);
    return throw_errno(env, whence == SEEK_DATA ? "lseek(SEEK_DATA)" : "lseek(SEEK_HOLE)");
  }
  return number(env, (double)r);
}

static napi_value do_fallocate(napi_env env, napi_callback_info info, int mode, const char *what) {
  int fd;
  double nums[2];
  if (!get_args(env, info, 3, &fd, nums)) return NULL;
  if (nums[1] == 0) return NULL;
  int r;
  do r = fallocate(fd, mode, (off_t)nums[0], (off_t)nums[1]);
  while (r < 0 && errno == EINTR);
  if (r < 0) return throw_errno(env, what);
  return NULL;
}

static napi_value punch_hole(napi_env env, napi_callback_info info) {
  return do_fallocate(env, info, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, "fallocate(PUNCH_HOLE)");
}
static napi_value zero_range(napi_env env, napi_callback_info info) {
  return do_fallocate(env, info, FALLOC_FL_ZERO_RANGE, "fallocate(ZERO_RANGE)");
}
static napi_value allocate(napi_env env, napi_callback_info info) {
  return do_fallocate(env, info, 0, "fallocate");
}

/*
 * reserve(fd, offset, length) -> Promise: fallocate(KEEP_SIZE) on a libuv worker thread, for
 * a range about to be written. Writing into blocks reserved this way skips ext4's per-page
 * delayed-allocation bookkeeping (measured: 2 GiB of 2 MiB writes into a new file took a fifth
 * less system time), and KEEP_SIZE leaves the file's size to the write itself, so a write that
 * fails never leaves a longer file behind. Asynchronous because the call takes a journal
 * handle and may wait for it.
 */
/* A promise settled by a worker's errno (0: resolved); the head of reserve's, copyRange's and dropCleanCache's jobs. */
typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  const char *what; /* the call, for the rejection's message */
  int err;
} errno_job;

static void errno_job_complete(napi_env env, napi_status status, void *data) {
  errno_job *job = data;
  if (status == napi_ok && job->err == 0) {
    napi_value undefined;
    napi_get_undefined(env, &undefined);
    napi_resolve_deferred(env, job->deferred, undefined);
  } else {
    napi_reject_deferred(env, job->deferred, errno_error(env, job->what, status == napi_ok ? job->err : EIO));
  }
  napi_delete_async_work(env, job->work);
  free(job);
}

/* Makes the job's promise into *promise and queues `run` on a libuv worker, settled by
 * errno_job_complete. When it cannot be queued the promise is rejected (EIO) and the job freed. */
static void errno_queue(napi_env env, errno_job *job, const char *name, napi_async_execute_callback run, napi_value *promise) {
  napi_value label;
  napi_create_promise(env, &job->deferred, promise);
  napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &label);
  if (napi_create_async_work(env, NULL, label, run, errno_job_complete, job, &job->work) == napi_ok && napi_queue_async_work(env, job->work) == napi_ok) return;
  if (job->work) napi_delete_async_work(env, job->work);
  napi_reject_deferred(env, job->deferred, errno_error(env, name, EIO));
  free(job);
}

typedef struct {
  errno_job head;
  int fd;
  off_t offset, length;
} reserve_job;

static void reserve_execute(napi_env env, void *data) {
  (void)env;
  reserve_job *job = data;
  int r;
  do r = fallocate(job->fd, FALLOC_FL_KEEP_SIZE, job->offset, job->length);
  while (r < 0 && errno == EINTR);
  job->head.err = r < 0 ? errno : 0;
}

static napi_value reserve(napi_env env, napi_callback_info info) {
  int fd;
  double nums[2];
  if (!get_args(env, info, 3, &fd, nums)) return NULL;
  reserve_job *job = calloc(1, sizeof *job);
  if (!job) return throw_oom(env);
  job->head.what = "fallocate";
  job->fd = fd;
  job->offset = (off_t)nums[0];
  job->length = (off_t)nums[1];
  napi_value promise, name;
  napi_create_promise(env, &job->head.deferred, &promise);
  napi_create_string_utf8(env, "hostio.reserve", NAPI_AUTO_LENGTH, &name);
  if (job->length == 0 ||
      napi_create_async_work(env, NULL, name, reserve_execute, errno_job_complete, job, &job->head.work) != napi_ok ||
      napi_queue_async_work(env, job->head.work) != napi_ok) {
    napi_value undefined;
    napi_get_undefined(env, &undefined);
    napi_resolve_deferred(env, job->head.deferred, undefined);
    if (job->head.work) napi_delete_async_work(env, job->head.work);
    free(job);
  }
  return promise;
}

/*
 * read(fd, view, offset) -> Promise<number>: pread(2) into `view` on a libuv worker thread until
 * it is full or the file ends; resolves with the bytes read (fewer only at the end of the file).
 * Rejects with the errno `code` and strerror's message. What fs/promises' FileHandle.read does,
 * at a tenth of its cost on the main thread (measured with callgrind: about 90 000 instructions
 * per call through FileHandle.read, its validation, reference counting and promise plumbing,
 * against under 10 000 here); a convert makes one such read per chunk.
 */
typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  napi_ref keep; /* the view, alive until the read is done */
  int fd;
  uint8_t *data;
  size_t length, done;
  off_t offset;
  int err;
} read_job;

static void read_execute(napi_env env, void *data) {
  (void)env;
  read_job *job = data;
  while (job->done < job->length) {
    ssize_t r = pread(job->fd, job->data + job->done, job->length - job->done, job->offset + (off_t)job->done);
    if (r < 0) {
      if (errno == EINTR) continue;
      job->err = errno;
      return;
    }
    if (r == 0) return; /* the end of the file */
    job->done += (size_t)r;
  }
}

static void read_complete(napi_env env, napi_status status, void *data) {
  read_job *job = data;
  if (status == napi_ok && job->err == 0) napi_resolve_deferred(env, job->deferred, number(env, (double)job->done));
  else napi_reject_deferred(env, job->deferred, errno_error(env, NULL, status == napi_ok ? job->err : EIO));
  napi_delete_reference(env, job->keep);
  napi_delete_async_work(env, job->work);
  free(job);
}

static napi_value read_into(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  int32_t fd;
  double offset;
  napi_typedarray_type type;
  size_t length;
  void *bytes;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 3 || napi_get_value_int32(env, argv[0], &fd) != napi_ok ||
      napi_get_typedarray_info(env, argv[1], &type, &length, &bytes, NULL, NULL) != napi_ok || type != napi_uint8_array ||
      napi_get_value_double(env, argv[2], &offset) != napi_ok) {
    napi_throw_type_error(env, NULL, "hostio: read(fd, Uint8Array, offset)");
    return NULL;
  }
  if (!(offset >= 0 && offset <= 9007199254740992.0)) {
    napi_throw_range_error(env, NULL, "hostio: offsets must be non-negative safe integers");
    return NULL;
  }
  read_job *job = calloc(1, sizeof *job);
  if (!job) return throw_oom(env);
  job->fd = fd;
  job->data = bytes;
  job->length = length;
  job->offset = (off_t)offset;
  napi_value promise, name;
  napi_create_promise(env, &job->deferred, &promise);
  napi_create_reference(env, argv[1], 1, &job->keep);
  napi_create_string_utf8(env, "hostio.read", NAPI_AUTO_LENGTH, &name);
  if (napi_create_async_work(env, NULL, name, read_execute, read_complete, job, &job->work) != napi_ok ||
      napi_queue_async_work(env, job->work) != napi_ok) {
    napi_reject_deferred(env, job->deferred, errno_error(env, "pread", EIO));
    if (job->work) napi_delete_async_work(env, job->work);
    napi_delete_reference(env, job->keep);
    free(job);
  }
  return promise;
}

/*
 * copyRange(fdIn, offsetIn, fdOut, offsetOut, length) -> Promise: copy_file_range(2) on a libuv
 * worker thread until the whole range is copied, as QEMU's file driver does for
 * `qemu-img convert -C` (block/file-posix.c handle_aiocb_copy_range): the data goes from one
 * file to the other inside the kernel (or as a reflink / server-side copy where the filesystem
 * offers one) without passing through this process. A call that copies nothing (the source
 * ends early) fails with ENOSPC, as QEMU's does, and the caller falls back to reading and
 * writing; ENOSYS is reported as ENOTSUP. Rejects with the errno `code`.
 */
typedef struct {
  errno_job head;
  int fd_in, fd_out;
  off_t in, out, length;
} copy_job;

static void copy_execute(napi_env env, void *data) {
  (void)env;
  copy_job *job = data;
  loff_t in = job->in, out = job->out;
  off_t left = job->length;
  job->head.err = 0;
  while (left > 0) {
    size_t want = left > (off_t)(1 << 30) ? (size_t)(1 << 30) : (size_t)left;
    ssize_t r = copy_file_range(job->fd_in, &in, job->fd_out, &out, want, 0);
    if (r < 0) {
      if (errno == EINTR) continue;
      job->head.err = errno == ENOSYS ? ENOTSUP : errno;
      return;
    }
    if (r == 0) {
      job->head.err = ENOSPC;
      return;
    }
    left -= r;
  }
}

static napi_value copy_range(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  int32_t fds[2];
  double nums[3];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 5 ||
      napi_get_value_int32(env, argv[0], &fds[0]) != napi_ok || napi_get_value_double(env, argv[1], &nums[0]) != napi_ok ||
      napi_get_value_int32(env, argv[2], &fds[1]) != napi_ok || napi_get_value_double(env, argv[3], &nums[1]) != napi_ok ||
      napi_get_value_double(env, argv[4], &nums[2]) != napi_ok) {
    napi_throw_type_error(env, NULL, "hostio: copyRange(fdIn, offsetIn, fdOut, offsetOut, length)");
    return NULL;
  }
  for (int i = 0; i < 3; i++) {
    if (!(nums[i] >= 0 && nums[i] <= 9007199254740992.0)) {
      napi_throw_range_error(env, NULL, "hostio: offsets must be non-negative safe integers");
      return NULL;
    }
  }
  copy_job *job = calloc(1, sizeof *job);
  if (!job) return throw_oom(env);
  job->head.what = "copy_file_range";
  job->fd_in = fds[0];
  job->fd_out = fds[1];
  job->in = (off_t)nums[0];
  job->out = (off_t)nums[1];
  job->length = (off_t)nums[2];
  napi_value promise;
  errno_queue(env, &job->head, "hostio.copyRange", copy_execute, &promise);
  return promise;
}

/*
 * What inflateRaw and xtsSectors share: work on a libuv worker thread whose promise is settled
 * back on the main thread, and a reference that keeps the caller's buffers alive until then.
 * Each job struct starts with a pool_job.
 */
typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  napi_ref keep;
  const char *failed; /* set by the worker: the promise is rejected with it */
} pool_job;

/* Makes the job's promise into *promise and queues the work, `keep` held until it is done.
 * 0 when it could not be queued: the promise is then rejected and the caller frees the job. */
static int pool_queue(napi_env env, pool_job *job, napi_value keep, const char *name, napi_async_execute_callback run,
                      napi_async_complete_callback done, napi_value *promise) {
  napi_value label;
  napi_create_promise(env, &job->deferred, promise);
  napi_create_reference(env, keep, 1, &job->keep);
  napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &label);
  if (napi_create_async_work(env, NULL, label, run, done, job, &job->work) == napi_ok && napi_queue_async_work(env, job->work) == napi_ok) return 1;
  if (job->work) napi_delete_async_work(env, job->work);
  napi_delete_reference(env, job->keep);
  napi_reject_deferred(env, job->deferred, errno_error(env, name, EIO));
  return 0;
}

/* In a completion: rejects the promise (EIO) and returns 1 if the work failed or never ran. */
static int pool_rejected(napi_env env, napi_status status, pool_job *job) {
  if (status == napi_ok && !job->failed) return 0;
  napi_value code, text, error;
  napi_create_string_utf8(env, "EIO", NAPI_AUTO_LENGTH, &code);
  napi_create_string_utf8(env, job->failed ? job->failed : "hostio: the work was cancelled", NAPI_AUTO_LENGTH, &text);
  napi_create_error(env, code, text, &error);
  napi_reject_deferred(env, job->deferred, error);
  return 1;
}

/* The end of a completion: the buffers are released, the job freed. */
static void pool_done(napi_env env, pool_job *job) {
  napi_delete_reference(env, job->keep);
  napi_delete_async_work(env, job->work);
  free(job);
}

/*
 * inflateRaw(views) -> Promise<(number | string)[]>: raw deflate streams inflated on a libuv
 * worker thread. `views` alternates inputs and outputs, [in0, out0, in1, out1, ...]; each input
 * is inflated into its output until its stream ends or the output is full. Bytes after a
 * stream's end are ignored (a compressed qcow2 cluster is stored in whole sectors, so the next
 * cluster's stream may follow it) and a stream that fills its output exactly is accepted without
 * reaching its end, as QEMU's qcow2 decompression accepts both. Result i is the number of bytes
 * written into output i, or zlib's message when input i is not valid deflate data. Why: on the
 * main thread, inflating a compressed image's clusters was about 1 s of CPU per GiB that QEMU
 * spreads over its thread pool; several of these calls in flight use both cores.
 */
typedef struct {
  const uint8_t *in;
  uint8_t *out;
  size_t in_len, out_len, produced;
  const char *msg;
} inflate_item;

typedef struct {
  pool_job pool; /* keeps a private array holding the views */
  uint32_t count;
  inflate_item items[];
} inflate_job;

static void inflate_execute(napi_env env, void *data) {
  (void)env;
  inflate_job *job = data;
  z_stream s;
  memset(&s, 0, sizeof s);
  if (inflateInit2(&s, -15) != Z_OK) {
    job->pool.failed = "hostio: zlib could not be initialised";
    return;
  }
  for (uint32_t i = 0; i < job->count; i++) {
    inflate_item *it = &job->items[i];
    if (i > 0) inflateReset(&s);
    s.next_in = (Bytef *)it->in;
    s.avail_in = (uInt)it->in_len;
    s.next_out = it->out;
    s.avail_out = (uInt)it->out_len;
    int r = it->out_len ? inflate(&s, Z_FINISH) : Z_STREAM_END;
    it->produced = it->out_len - s.avail_out;
    if (r != Z_STREAM_END && r != Z_OK && r != Z_BUF_ERROR) it->msg = s.msg ? s.msg : "invalid deflate data";
  }
  inflateEnd(&s);
}

static void inflate_complete(napi_env env, napi_status status, void *data) {
  inflate_job *job = data;
  if (!pool_rejected(env, status, &job->pool)) {
    napi_value results;
    napi_create_array_with_length(env, job->count, &results);
    for (uint32_t i = 0; i < job->count; i++) {
      napi_value v;
      if (job->items[i].msg) napi_create_string_utf8(env, job->items[i].msg, NAPI_AUTO_LENGTH, &v);
      else v = number(env, (double)job->items[i].produced);
      napi_set_element(env, results, i, v);
    }
    napi_resolve_deferred(env, job->pool.deferred, results);
  }
  pool_done(env, &job->pool);
}

static napi_value inflate_raw(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  uint32_t length = 0;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      napi_get_array_length(env, argv[0], &length) != napi_ok || length == 0 || length % 2 || length > 1u << 20) {
    napi_throw_type_error(env, NULL, "hostio: inflateRaw takes a non-empty array [input, output, ...]");
    return NULL;
  }
  inflate_job *job = calloc(1, sizeof *job + (length / 2) * sizeof(inflate_item));
  if (!job) return throw_oom(env);
  job->count = length / 2;
  napi_value keep;
  napi_create_array_with_length(env, length, &keep);
  for (uint32_t i = 0; i < length; i++) {
    napi_value view;
    size_t bytes;
    void *data;
    if (!uint8_element(env, argv[0], i, &view, &data, &bytes) || bytes > UINT_MAX) {
      free(job);
      napi_throw_type_error(env, NULL, "hostio: inflateRaw takes Uint8Array views of at most 4 GiB");
      return NULL;
    }
    napi_set_element(env, keep, i, view);
    inflate_item *it = &job->items[i / 2];
    if (i % 2 == 0) {
      it->in = data;
      it->in_len = bytes;
    } else {
      it->out = data;
      it->out_len = bytes;
    }
  }
  napi_value promise;
  if (!pool_queue(env, &job->pool, keep, "hostio.inflateRaw", inflate_execute, inflate_complete, &promise)) free(job);
  return promise;
}

/*
 * xtsSectors(key, data, firstSector, ivBits, encrypt) -> Promise: AES-XTS (IEEE 1619) over the
 * 512-byte sectors of `data`, in place, on a libuv worker thread. Sector i's IV is its number,
 * firstSector + i, little-endian in 16 bytes (ivBits 64: LUKS's plain64; 32: plain, the number
 * modulo 2^32). `key` is both XTS keys (32 or 64 bytes). Why: LUKS payloads were decrypted on
 * the main thread (about 2.7 s of CPU per GiB of reads, where QEMU uses its thread pool); here
 * OpenSSL's AES-NI code does a sector in one call, and several calls in flight use both cores.
 * OpenSSL is Node's own, found at run time: an addon built against a Node whose binary does not
 * export it simply lacks this call, and the engine keeps its own XTS.
 */
typedef struct evp_cipher_st EVP_CIPHER;
typedef struct evp_cipher_ctx_st EVP_CIPHER_CTX;
static struct {
  EVP_CIPHER_CTX *(*ctx_new)(void);
  void (*ctx_free)(EVP_CIPHER_CTX *);
  const EVP_CIPHER *(*aes_128_xts)(void);
  const EVP_CIPHER *(*aes_256_xts)(void);
  int (*init)(EVP_CIPHER_CTX *, const EVP_CIPHER *, void *, const unsigned char *, const unsigned char *, int);
  int (*update)(EVP_CIPHER_CTX *, unsigned char *, int *, const unsigned char *, int);
  int found;
} ossl;

static void find_openssl(void) {
  ossl.ctx_new = (EVP_CIPHER_CTX * (*)(void)) dlsym(RTLD_DEFAULT, "EVP_CIPHER_CTX_new");
  ossl.ctx_free = (void (*)(EVP_CIPHER_CTX *))dlsym(RTLD_DEFAULT, "EVP_CIPHER_CTX_free");
  ossl.aes_128_xts = (const EVP_CIPHER *(*)(void))dlsym(RTLD_DEFAULT, "EVP_aes_128_xts");
  ossl.aes_256_xts = (const EVP_CIPHER *(*)(void))dlsym(RTLD_DEFAULT, "EVP_aes_256_xts");
  ossl.init = (int (*)(EVP_CIPHER_CTX *, const EVP_CIPHER *, void *, const unsigned char *, const unsigned char *, int))dlsym(RTLD_DEFAULT, "EVP_CipherInit_ex");
  ossl.update = (int (*)(EVP_CIPHER_CTX *, unsigned char *, int *, const unsigned char *, int))dlsym(RTLD_DEFAULT, "EVP_CipherUpdate");
  ossl.found = ossl.ctx_new && ossl.ctx_free && ossl.aes_128_xts && ossl.aes_256_xts && ossl.init && ossl.update;
}

typedef struct {
  pool_job pool; /* keeps the data view */
  unsigned char key[64];
  size_t key_len;
  uint8_t *data;
  size_t length;
  double first_sector;
  int iv_bits, encrypt;
} xts_job;

static void xts_execute(napi_env env, void *data) {
  (void)env;
  xts_job *job = data;
  EVP_CIPHER_CTX *ctx = ossl.ctx_new();
  if (!ctx) {
    job->pool.failed = "hostio: OpenSSL could not make a cipher context";
    memset(job->key, 0, sizeof job->key);
    return;
  }
  const EVP_CIPHER *cipher = job->key_len == 32 ? ossl.aes_128_xts() : ossl.aes_256_xts();
  if (!ossl.init(ctx, cipher, NULL, job->key, NULL, job->encrypt)) {
    job->pool.failed = "hostio: OpenSSL refused the XTS key";
  } else {
    uint64_t sector = (uint64_t)job->first_sector;
    for (size_t at = 0; at < job->length; at += 512, sector++) {
      unsigned char iv[16] = {0};
      uint64_t n = job->iv_bits == 32 ? (sector & 0xffffffffu) : sector;
      for (int b = 0; b < 8; b++) iv[b] = (unsigned char)(n >> (8 * b));
      int out = 0;
      if (!ossl.init(ctx, NULL, NULL, NULL, iv, job->encrypt) || !ossl.update(ctx, job->data + at, &out, job->data + at, 512) || out != 512) {
        job->pool.failed = "hostio: OpenSSL failed to run XTS";
        break;
      }
    }
  }
  ossl.ctx_free(ctx);
  memset(job->key, 0, sizeof job->key);
}

static void xts_complete(napi_env env, napi_status status, void *data) {
  xts_job *job = data;
  if (!pool_rejected(env, status, &job->pool)) {
    napi_value undefined;
    napi_get_undefined(env, &undefined);
    napi_resolve_deferred(env, job->pool.deferred, undefined);
  }
  memset(job->key, 0, sizeof job->key); /* (a job that never ran still holds it) */
  pool_done(env, &job->pool);
}

static napi_value xts_sectors(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  napi_typedarray_type type;
  size_t key_len = 0, length = 0;
  void *key = NULL, *bytes = NULL;
  double first = -1;
  int32_t iv_bits = 0;
  bool encrypt = false;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 5 ||
      napi_get_typedarray_info(env, argv[0], &type, &key_len, &key, NULL, NULL) != napi_ok || type != napi_uint8_array ||
      (key_len != 32 && key_len != 64) ||
      napi_get_typedarray_info(env, argv[1], &type, &length, &bytes, NULL, NULL) != napi_ok || type != napi_uint8_array ||
      length % 512 != 0 || length > (size_t)1 << 30 ||
      napi_get_value_double(env, argv[2], &first) != napi_ok || first < 0 || first > 9007199254740992.0 ||
      napi_get_value_int32(env, argv[3], &iv_bits) != napi_ok || (iv_bits != 32 && iv_bits != 64) ||
      napi_get_value_bool(env, argv[4], &encrypt) != napi_ok) {
    napi_throw_type_error(env, NULL, "hostio: xtsSectors(key of 32 or 64 bytes, whole 512-byte sectors, first sector, IV bits 32 or 64, encrypt)");
    return NULL;
  }
  if (!ossl.found) {
    napi_throw_error(env, "ENOSYS", "hostio: this Node does not export OpenSSL");
    return NULL;
  }
  xts_job *job = calloc(1, sizeof *job);
  if (!job) return throw_oom(env);
  memcpy(job->key, key, key_len);
  job->key_len = key_len;
  job->data = bytes;
  job->length = length;
  job->first_sector = first;
  job->iv_bits = iv_bits;
  job->encrypt = encrypt;
  napi_value promise;
  if (!pool_queue(env, &job->pool, argv[1], "hostio.xtsSectors", xts_execute, xts_complete, &promise)) {
    memset(job->key, 0, sizeof job->key);
    free(job);
  }
  return promise;
}

/*
 * digestOpen(name) -> handle; digestUpdate(handle, views) -> Promise; digestFinal(handle) ->
 * Uint8Array. A message digest ("md5" or "sha512", Node's own OpenSSL) whose updates run on a
 * libuv worker thread, one at a time per handle (a second update while one runs throws EBUSY).
 * Why: the image service hashes every upload twice (Glance's md5 `checksum` and sha512
 * `os_hash_value`); each hash takes a core for the whole upload. Two updates in flight (one per
 * algorithm) use both cores while the main thread reads the socket, with no copy of the data
 * and no message to a worker thread per batch (posting 1 MiB batches to two worker threads cost
 * the main thread about as much CPU as reading the socket did). The handle frees its context when
 * it is garbage collected; a pending update keeps it alive.
 */
typedef struct evp_md_st EVP_MD;
typedef struct evp_md_ctx_st EVP_MD_CTX;
static struct {
  EVP_MD_CTX *(*ctx_new)(void);
  void (*ctx_free)(EVP_MD_CTX *);
  const EVP_MD *(*md5)(void);
  const EVP_MD *(*sha512)(void);
  int (*init)(EVP_MD_CTX *, const EVP_MD *, void *);
  int (*update)(EVP_MD_CTX *, const void *, size_t);
  int (*final)(EVP_MD_CTX *, unsigned char *, unsigned int *);
  int found;
} omd;

static void find_openssl_digests(void) {
  omd.ctx_new = (EVP_MD_CTX * (*)(void)) dlsym(RTLD_DEFAULT, "EVP_MD_CTX_new");
  omd.ctx_free = (void (*)(EVP_MD_CTX *))dlsym(RTLD_DEFAULT, "EVP_MD_CTX_free");
  omd.md5 = (const EVP_MD *(*)(void))dlsym(RTLD_DEFAULT, "EVP_md5");
  omd.sha512 = (const EVP_MD *(*)(void))dlsym(RTLD_DEFAULT, "EVP_sha512");
  omd.init = (int (*)(EVP_MD_CTX *, const EVP_MD *, void *))dlsym(RTLD_DEFAULT, "EVP_DigestInit_ex");
  omd.update = (int (*)(EVP_MD_CTX *, const void *, size_t))dlsym(RTLD_DEFAULT, "EVP_DigestUpdate");
  omd.final = (int (*)(EVP_MD_CTX *, unsigned char *, unsigned int *))dlsym(RTLD_DEFAULT, "EVP_DigestFinal_ex");
  omd.found = omd.ctx_new && omd.ctx_free && omd.md5 && omd.sha512 && omd.init && omd.update && omd.final;
}

typedef struct {
  EVP_MD_CTX *ctx;
  int busy;  /* an update is queued or running */
  int final; /* digestFinal was called */
} digest_state;

static void digest_free(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  digest_state *d = data;
  omd.ctx_free(d->ctx);
  free(d);
}

static napi_value digest_open(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  char name[16];
  size_t len = 0;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      napi_get_value_string_utf8(env, argv[0], name, sizeof name, &len) != napi_ok || (strcmp(name, "md5") != 0 && strcmp(name, "sha512") != 0)) {
    napi_throw_type_error(env, NULL, "hostio: digestOpen('md5' or 'sha512')");
    return NULL;
  }
  digest_state *d = calloc(1, sizeof *d);
  if (!d) return throw_oom(env);
  d->ctx = omd.ctx_new();
  if (!d->ctx || !omd.init(d->ctx, strcmp(name, "md5") == 0 ? omd.md5() : omd.sha512(), NULL)) {
    if (d->ctx) omd.ctx_free(d->ctx);
    free(d);
    napi_throw_error(env, "EIO", "hostio: OpenSSL could not start the digest");
    return NULL;
  }
  napi_value handle;
  if (napi_create_external(env, d, digest_free, NULL, &handle) != napi_ok) {
    omd.ctx_free(d->ctx);
    free(d);
    napi_throw_error(env, "EIO", "hostio: could not make the digest handle");
    return NULL;
  }
  return handle;
}

/* The digest a call names, idle and not finalized; NULL (and a thrown error) otherwise. */
static digest_state *digest_arg(napi_env env, napi_value v) {
  void *d = NULL;
  if (napi_get_value_external(env, v, &d) != napi_ok || !d) {
    napi_throw_type_error(env, NULL, "hostio: not a digest");
    return NULL;
  }
  if (((digest_state *)d)->busy) {
    napi_throw_error(env, "EBUSY", "hostio: the digest's previous update has not finished");
    return NULL;
  }
  if (((digest_state *)d)->final) {
    napi_throw_error(env, "EINVAL", "hostio: the digest is already final");
    return NULL;
  }
  return d;
}

typedef struct {
  pool_job pool; /* keeps the handle and the views */
  digest_state *d;
  uint32_t count;
  struct iovec parts[];
} digest_job;

static void digest_execute(napi_env env, void *data) {
  (void)env;
  digest_job *job = data;
  for (uint32_t i = 0; i < job->count; i++) {
    if (!omd.update(job->d->ctx, job->parts[i].iov_base, job->parts[i].iov_len)) {
      job->pool.failed = "hostio: OpenSSL failed to update the digest";
      return;
    }
  }
}

static void digest_complete(napi_env env, napi_status status, void *data) {
  digest_job *job = data;
  job->d->busy = 0;
  if (!pool_rejected(env, status, &job->pool)) {
    napi_value undefined;
    napi_get_undefined(env, &undefined);
    napi_resolve_deferred(env, job->pool.deferred, undefined);
  }
  pool_done(env, &job->pool);
}

static napi_value digest_update(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  uint32_t count = 0;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2 ||
      napi_get_array_length(env, argv[1], &count) != napi_ok || count > 1u << 20) {
    napi_throw_type_error(env, NULL, "hostio: digestUpdate(digest, Uint8Array[])");
    return NULL;
  }
  digest_state *d = digest_arg(env, argv[0]);
  if (!d) return NULL;
  digest_job *job = calloc(1, sizeof *job + count * sizeof job->parts[0]);
  if (!job) return throw_oom(env);
  /* [handle, view0, view1, ...]: the views themselves stay alive, whatever becomes of the array. */
  napi_value keep, promise;
  napi_create_array_with_length(env, count + 1, &keep);
  napi_set_element(env, keep, 0, argv[0]);
  for (uint32_t i = 0; i < count; i++) {
    napi_value view;
    if (!uint8_element(env, argv[1], i, &view, &job->parts[i].iov_base, &job->parts[i].iov_len)) {
      free(job);
      napi_throw_type_error(env, NULL, "hostio: digestUpdate takes Uint8Array views");
      return NULL;
    }
    napi_set_element(env, keep, i + 1, view);
  }
  job->d = d;
  job->count = count;
  if (!pool_queue(env, &job->pool, keep, "hostio.digestUpdate", digest_execute, digest_complete, &promise)) free(job);
  else d->busy = 1;
  return promise;
}

static napi_value digest_final(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1) {
    napi_throw_type_error(env, NULL, "hostio: digestFinal(digest)");
    return NULL;
  }
  digest_state *d = digest_arg(env, argv[0]);
  if (!d) return NULL;
  unsigned char md[64];
  unsigned int n = 0;
  d->final = 1;
  if (!omd.final(d->ctx, md, &n)) {
    napi_throw_error(env, "EIO", "hostio: OpenSSL failed to finish the digest");
    return NULL;
  }
  void *out = NULL;
  napi_value buffer, view;
  napi_create_arraybuffer(env, n, &out, &buffer);
  memcpy(out, md, n);
  napi_create_typedarray(env, napi_uint8_array, n, buffer, 0, &view);
  return view;
}

/*
 * The serial writer: one thread per file that makes the writes queued to it one at a time, in
 * queue order, each optionally preceded by a reservation of its range (fallocate KEEP_SIZE, as
 * reserve above). This is how qemu-img convert writes its target (one write in flight, in guest
 * order). Writes to one file from several threads at once only take turns on the inode lock,
 * and on two cores the spinning there cost a tenth of a convert's CPU; queueing them in
 * JavaScript instead made each write wait for the busy main thread before it could start. Here
 * the next write starts the moment the previous one returns.
 *
 * openWriter(fd) -> handle; writerWrite(handle, views, offset, reserve) -> Promise (rejects
 * with an errno `code`); closeWriter(handle) -> Promise, settled once every queued write has
 * been made and the thread has ended. The caller keeps the fd open until then. Completions
 * reach JavaScript through a thread-safe function that holds the event loop open only while
 * writes are outstanding.
 */
typedef struct write_job {
  struct write_job *next;
  napi_deferred deferred;
  napi_ref *refs; /* the views, kept alive until the write is made */
  struct iovec *iov;
  int iovcnt;
  off_t offset;
  int reserve;
  int err;
} write_job;

typedef struct {
  int fd;
  int reserving; /* cleared when the file refuses a reservation */
  pthread_mutex_t mu;
  pthread_cond_t cv;
  write_job *head, *tail;
  int closing; /* closeWriter was called (or the environment ended): no more writes */
  int gone;   /* the completion queue is finalized: the thread must not use it */
  int exited; /* the thread has ended */
  size_t outstanding; /* queued and not yet settled in JavaScript (main thread only) */
  napi_threadsafe_function tsfn;
  napi_deferred close_deferred;
} writer;

static void free_job(write_job *job) {
  free(job->refs);
  free(job->iov);
  free(job);
}

static void free_writer(writer *w) {
  pthread_mutex_destroy(&w->mu);
  pthread_cond_destroy(&w->cv);
  free(w);
}

static void write_job_run(writer *w, write_job *job) {
  if (job->reserve && w->reserving) {
    off_t length = 0;
    for (int i = 0; i < job->iovcnt; i++) length += (off_t)job->iov[i].iov_len;
    int r;
    do r = fallocate(w->fd, FALLOC_FL_KEEP_SIZE, job->offset, length);
    while (r < 0 && errno == EINTR);
    /* Refused (not supported here, or no space): the write itself reports what matters. */
    if (r < 0) w->reserving = 0;
  }
  struct iovec *iov = job->iov;
  int n = job->iovcnt;
  off_t at = job->offset;
  while (n > 0) {
    ssize_t r = pwritev(w->fd, iov, n > IOV_MAX ? IOV_MAX : n, at);
    if (r < 0) {
      if (errno == EINTR) continue;
      job->err = errno;
      return;
    }
    if (r == 0) {
      job->err = EIO;
      return;
    }
    at += r;
    /* A short write: skip what went out, continue with the rest. */
    while (n > 0 && (size_t)r >= iov->iov_len) {
      r -= (ssize_t)iov->iov_len;
      iov++;
      n--;
    }
    if (n > 0) {
      iov->iov_base = (char *)iov->iov_base + r;
      iov->iov_len -= (size_t)r;
    }
  }
}

static void *writer_thread(void *arg) {
  writer *w = arg;
  pthread_mutex_lock(&w->mu);
  for (;;) {
    while (!w->head && !w->closing) pthread_cond_wait(&w->cv, &w->mu);
    write_job *job = w->head;
    if (!job) break; /* closing, and nothing left */
    w->head = job->next;
    if (!w->head) w->tail = NULL;
    pthread_mutex_unlock(&w->mu);
    write_job_run(w, job);
    pthread_mutex_lock(&w->mu);
    /* Under the lock: the completion queue is alive until writer_finalize has taken it. */
    if (w->gone) free_job(job);
    else napi_call_threadsafe_function(w->tsfn, job, napi_tsfn_nonblocking);
  }
  w->exited = 1;
  int gone = w->gone;
  if (!gone) napi_release_threadsafe_function(w->tsfn, napi_tsfn_release);
  pthread_mutex_unlock(&w->mu);
  if (gone) free_writer(w); /* the environment went first (the process is exiting) */
  return NULL;
}

/* On the main thread: settle a finished write. */
static void writer_done(napi_env env, napi_value js_cb, void *context, void *data) {
  (void)js_cb;
  writer *w = context;
  write_job *job = data;
  if (!job) return;
  if (env) {
    if (job->err == 0) {
      napi_value undefined;
      napi_get_undefined(env, &undefined);
      napi_resolve_deferred(env, job->deferred, undefined);
    } else {
      /* Worded as qemu-img words it ("error while writing at byte N: No space left on device"). */
      napi_reject_deferred(env, job->deferred, errno_error(env, NULL, job->err));
    }
    for (int i = 0; i < job->iovcnt; i++) napi_delete_reference(env, job->refs[i]);
    if (--w->outstanding == 0 && !w->closing) napi_unref_threadsafe_function(env, w->tsfn);
  }
  free_job(job);
}

/*
 * The completion queue is finalized: after closeWriter, once the thread has released it; or when
 * the environment ends (an idle writer does not hold the process) while the thread may still
 * wait for work, in which case the thread is told to end and frees the writer itself.
 */
static void writer_finalize(napi_env env, void *data, void *hint) {
  (void)hint;
  writer *w = data;
  if (w->close_deferred) {
    napi_value undefined;
    napi_get_undefined(env, &undefined);
    napi_resolve_deferred(env, w->close_deferred, undefined);
  }
  pthread_mutex_lock(&w->mu);
  w->gone = 1;
  w->closing = 1;
  pthread_cond_signal(&w->cv);
  int exited = w->exited;
  pthread_mutex_unlock(&w->mu);
  if (exited) free_writer(w);
}

/* The call's `want` arguments, the first a writer that is still open; NULL (and a thrown error) otherwise. */
static writer *writer_args(napi_env env, napi_callback_info info, size_t want, napi_value *argv, const char *usage) {
  size_t argc = want;
  void *w = NULL;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < want) {
    napi_throw_type_error(env, NULL, usage);
    return NULL;
  }
  if (napi_get_value_external(env, argv[0], &w) != napi_ok || !w) {
    napi_throw_type_error(env, NULL, "hostio: not a writer");
    return NULL;
  }
  if (((writer *)w)->closing) {
    napi_throw_error(env, "EBADF", "hostio: writer is closed");
    return NULL;
  }
  return w;
}

static napi_value open_writer(napi_env env, napi_callback_info info) {
  int fd;
  double unused[1];
  if (!get_args(env, info, 1, &fd, unused)) return NULL;
  writer *w = calloc(1, sizeof *w);
  if (!w) return throw_oom(env);
  w->fd = fd;
  w->reserving = 1;
  pthread_mutex_init(&w->mu, NULL);
  pthread_cond_init(&w->cv, NULL);
  napi_value name, handle;
  napi_create_string_utf8(env, "hostio.writer", NAPI_AUTO_LENGTH, &name);
  if (napi_create_threadsafe_function(env, NULL, NULL, name, 0, 1, w, writer_finalize, w, writer_done, &w->tsfn) != napi_ok) {
    free_writer(w);
    napi_throw_error(env, "EIO", "hostio: could not create the writer's completion queue");
    return NULL;
  }
  napi_unref_threadsafe_function(env, w->tsfn);
  pthread_t thread;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  int r = pthread_create(&thread, &attr, writer_thread, w);
  pthread_attr_destroy(&attr);
  if (r != 0) {
    w->exited = 1; /* no thread: finalize frees w */
    napi_release_threadsafe_function(w->tsfn, napi_tsfn_abort);
    napi_throw(env, errno_error(env, "pthread_create", r));
    return NULL;
  }
  napi_create_external(env, w, NULL, NULL, &handle);
  return handle;
}

static napi_value writer_write(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  writer *w = writer_args(env, info, 4, argv, "hostio: writerWrite(writer, views, offset, reserve)");
  if (!w) return NULL;
  uint32_t count;
  double offset;
  bool reserve = false;
  if (napi_get_array_length(env, argv[1], &count) != napi_ok || count == 0 || count > 1u << 20) {
    napi_throw_type_error(env, NULL, "hostio: writerWrite needs a non-empty array of views");
    return NULL;
  }
  if (napi_get_value_double(env, argv[2], &offset) != napi_ok || offset < 0 || offset > 9007199254740992.0) {
    napi_throw_range_error(env, NULL, "hostio: offsets must be non-negative safe integers");
    return NULL;
  }
  napi_get_value_bool(env, argv[3], &reserve);
  write_job *job = calloc(1, sizeof *job);
  if (job) {
    job->iov = calloc(count, sizeof *job->iov);
    job->refs = calloc(count, sizeof *job->refs);
  }
  if (!job || !job->iov || !job->refs) {
    if (job) free_job(job);
    return throw_oom(env);
  }
  for (uint32_t i = 0; i < count; i++) {
    napi_value view;
    size_t length;
    void *data;
    if (!uint8_element(env, argv[1], i, &view, &data, &length)) {
      for (int k = 0; k < job->iovcnt; k++) napi_delete_reference(env, job->refs[k]);
      free_job(job);
      napi_throw_type_error(env, NULL, "hostio: writerWrite takes Uint8Array views");
      return NULL;
    }
    napi_create_reference(env, view, 1, &job->refs[i]);
    job->iov[i].iov_base = data;
    job->iov[i].iov_len = length;
    job->iovcnt++;
  }
  job->offset = (off_t)offset;
  job->reserve = reserve;
  napi_value promise;
  napi_create_promise(env, &job->deferred, &promise);
  if (w->outstanding++ == 0) napi_ref_threadsafe_function(env, w->tsfn);
  pthread_mutex_lock(&w->mu);
  if (w->tail) w->tail->next = job;
  else w->head = job;
  w->tail = job;
  pthread_cond_signal(&w->cv);
  pthread_mutex_unlock(&w->mu);
  return promise;
}

static napi_value close_writer(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  writer *w = writer_args(env, info, 1, argv, "hostio: closeWriter(writer)");
  if (!w) return NULL;
  napi_value promise;
  napi_create_promise(env, &w->close_deferred, &promise);
  /* Until the thread is gone, the loop stays alive for the close promise. */
  napi_ref_threadsafe_function(env, w->tsfn);
  pthread_mutex_lock(&w->mu);
  w->closing = 1;
  pthread_cond_signal(&w->cv);
  pthread_mutex_unlock(&w->mu);
  return promise;
}

/*
 * The address of a typed array's first byte modulo 4096. JavaScript cannot see addresses, and
 * the kernel copies to and from user buffers (read, write) several times faster on some CPUs
 * when the buffer is page-aligned like the page cache (measured: 2 MiB preads into a buffer at
 * page offset 16, where Node's allocations land, ran at a fifth of the aligned speed).
 */
static napi_value page_offset(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_typedarray_type type;
  size_t length;
  void *data;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      napi_get_typedarray_info(env, argv[0], &type, &length, &data, NULL, NULL) != napi_ok) {
    napi_throw_type_error(env, NULL, "pageOffset expects a typed array");
    return NULL;
  }
  return number(env, (double)((uintptr_t)data & 4095));
}

/*
 * zeroBlock(view, from, blockSize) -> number: where the first all-zero block of `view` starts,
 * looking at the blocks [from + k * blockSize, from + (k + 1) * blockSize) (the last one cut at
 * the view's end), or the view's length when none is all zero. convert's `-S` scan of a data
 * chunk: one call per chunk instead of a JavaScript loop over its blocks (a 2 GiB convert has
 * half a million 4 KiB blocks), as qemu-img scans its buffers in C. A block of real data nearly
 * always shows a non-zero word at once.
 */
static int block_is_zero(const uint8_t *p, size_t n) {
  size_t i = 0;
  for (; i < n && ((uintptr_t)(p + i) & 7); i++) if (p[i]) return 0;
  for (; i + 32 <= n; i += 32) {
    uint64_t a, b, c, d;
    memcpy(&a, p + i, 8);
    memcpy(&b, p + i + 8, 8);
    memcpy(&c, p + i + 16, 8);
    memcpy(&d, p + i + 24, 8);
    if (a | b | c | d) return 0;
  }
  for (; i < n; i++) if (p[i]) return 0;
  return 1;
}

static napi_value zero_block(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  napi_typedarray_type type;
  size_t length;
  void *data;
  double from, block;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 3 ||
      napi_get_typedarray_info(env, argv[0], &type, &length, &data, NULL, NULL) != napi_ok || type != napi_uint8_array ||
      napi_get_value_double(env, argv[1], &from) != napi_ok || napi_get_value_double(env, argv[2], &block) != napi_ok ||
      !(from >= 0) || !(block >= 1) || from != (double)(size_t)from || block != (double)(size_t)block) {
    napi_throw_type_error(env, NULL, "hostio: zeroBlock(Uint8Array, from, blockSize)");
    return NULL;
  }
  const uint8_t *bytes = data;
  size_t bs = (size_t)block;
  for (size_t at = (size_t)from; at < length; at += bs) {
    size_t n = length - at < bs ? length - at : bs;
    if (block_is_zero(bytes + at, n)) return number(env, (double)at);
  }
  return number(env, (double)length);
}

/* tryLock(fd): a POSIX record lock (fcntl F_SETLK, F_WRLCK) on the whole file without waiting;
 * true when taken, false when another process holds it. The lock oslo.concurrency's external
 * locks take (fcntl.lockf), so a lock file is shared with Nova's own lockutils. Released when
 * the fd is closed. */
static napi_value try_lock(napi_env env, napi_callback_info info) {
  int fd;
  double nums[1];
  if (!get_args(env, info, 1, &fd, nums)) return NULL;
  struct flock fl;
  memset(&fl, 0, sizeof fl);
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  int r;
  do r = fcntl(fd, F_SETLK, &fl);
  while (r < 0 && errno == EINTR);
  napi_value result;
  if (r < 0) {
    if (errno != EACCES && errno != EAGAIN) return throw_errno(env, "fcntl(F_SETLK)");
    napi_get_boolean(env, 0, &result);
  } else {
    napi_get_boolean(env, 1, &result);
  }
  return result;
}

/*
 * dropCleanCache(fd) -> Promise: on a libuv worker thread, when cachestat(2) (Linux 6.5)
 * reports no dirty page and no page under writeback in the file, posix_fadvise(DONTNEED) frees
 * its cached pages; otherwise (dirty pages, or no cachestat) nothing is done. The file's content
 * is untouched. For a file that is about to be replaced (convert onto an existing destination):
 * qemu-img truncates it first, which frees those pages before it writes; keeping the file
 * intact but dropping its pages gives the writes the same freshly freed memory (BENCHMARKS.md,
 * "Convert onto an existing destination: the old image's cached pages"). Dirty pages are left
 * alone because DONTNEED would first start writing back a file that is about to be deleted.
 * Asynchronous because freeing a large file's pages takes a fraction of a second.
 */
#ifndef __NR_cachestat
#define __NR_cachestat 451 /* the same number on every architecture (the unified syscall table) */
#endif
struct hostio_cachestat_range { uint64_t off, len; };
struct hostio_cachestat { uint64_t nr_cache, nr_dirty, nr_writeback, nr_evicted, nr_recently_evicted; };

typedef struct {
  errno_job head;
  int fd;
} drop_cache_job;

static void drop_cache_execute(napi_env env, void *data) {
  (void)env;
  drop_cache_job *job = data;
  struct hostio_cachestat_range range = {0, 0}; /* len 0: to the end of the file */
  struct hostio_cachestat cs;
  job->head.err = 0;
  if (syscall(__NR_cachestat, job->fd, &range, &cs, 0) != 0) {
    if (errno == EBADF) job->head.err = EBADF; /* ENOSYS and the like: the kernel cannot tell */
    return;
  }
  if (cs.nr_dirty == 0 && cs.nr_writeback == 0 && cs.nr_cache > 0) {
    job->head.what = "posix_fadvise(DONTNEED)";
    job->head.err = posix_fadvise(job->fd, 0, 0, POSIX_FADV_DONTNEED);
  }
}

static napi_value drop_clean_cache(napi_env env, napi_callback_info info) {
  int fd;
  double nums[1];
  if (!get_args(env, info, 1, &fd, nums)) return NULL;
  drop_cache_job *job = calloc(1, sizeof *job);
  if (!job) return throw_oom(env);
  job->head.what = "cachestat";
  job->fd = fd;
  napi_value promise;
  errno_queue(env, &job->head, "hostio.dropCleanCache", drop_cache_execute, &promise);
  return promise;
}

/*
 * exchange(pathA, pathB): renameat2(RENAME_EXCHANGE), both names swapped at once. convert puts a
 * finished image in place of an existing one this way: the name never shows a partial image nor
 * none, and unlike a rename over an existing file, ext4 does not flush the new file first (its
 * auto_da_alloc heuristic applies to ext4_rename, not to the exchange). Throws with the errno
 * `code` (EINVAL or EOPNOTSUPP where the filesystem cannot exchange, ENOSYS before Linux 3.15).
 */
static int path_arg(napi_env env, napi_value v, char *buf, size_t size) {
  size_t len;
  if (napi_get_value_string_utf8(env, v, buf, size, &len) != napi_ok) {
    napi_throw_type_error(env, NULL, "hostio: a path must be a string");
    return 0;
  }
  if (len + 1 >= size) {
    napi_throw(env, errno_error(env, "renameat2", ENAMETOOLONG));
    return 0;
  }
  return 1;
}

static napi_value exchange(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  size_t argc = 2;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2) {
    napi_throw_type_error(env, NULL, "hostio: wrong number of arguments");
    return NULL;
  }
  char *a = malloc(PATH_MAX + 1), *b = malloc(PATH_MAX + 1);
  napi_value result = NULL;
  if (!a || !b) result = throw_oom(env);
  else if (path_arg(env, argv[0], a, PATH_MAX + 1) && path_arg(env, argv[1], b, PATH_MAX + 1)) {
    if (syscall(SYS_renameat2, AT_FDCWD, a, AT_FDCWD, b, 1 << 1 /* RENAME_EXCHANGE */) != 0) throw_errno(env, "renameat2(RENAME_EXCHANGE)");
  }
  free(a);
  free(b);
  return result;
}

static napi_value init(napi_env env, napi_value exports) {
  /* Plain writable properties, like a JavaScript module's exports (tests switch a call off). */
  napi_property_descriptor props[] = {
    {"seek", NULL, seek, NULL, NULL, NULL, napi_default_jsproperty, NULL},
    {"punchHole", NULL, punch_hole, NULL, NULL, NULL, napi_default_jsproperty, NULL},
    {"zeroRange", NULL, zero_range, NULL, NULL, NULL, napi_default_jsproperty, NULL},
    {"allocate", NULL, allocate, NULL, NULL, NULL, napi_default_jsproperty, NULL},
    {"reserve", NULL, reserve, NULL, NULL, NULL, napi_default_jsproperty, NULL},
    {"read", NULL, read_into, NULL, NULL, NULL, napi_default_jsproperty, NULL},
    {"copyRange", NULL, copy_range, NULL, NULL, NULL, napi_default_jsproperty, NULL},
    {"pageOffset", NULL, page_offset, NULL, NULL, NULL, napi_default_jsproperty, NULL},
    {"zeroBlock", NULL, zero_block, NULL, NULL, NULL, napi_default_jsproperty, NULL},
    {"openWriter", NULL, open_writer, NULL, NULL, NULL, napi_default_jsproperty, NULL},
    {"writerWrite", NULL, writer_write, NULL, NULL, NULL, napi_default_jsproperty, NULL},
    {"closeWriter", NULL, close_writer, NULL, NULL, NULL, napi_default_jsproperty, NULL},
    {"tryLock", NULL, try_lock, NULL, NULL, NULL, napi_default_jsproperty, NULL},
    {"exchange", NULL, exchange, NULL, NULL, NULL, napi_default_jsproperty, NULL},
    {"dropCleanCache", NULL, drop_clean_cache, NULL, NULL, NULL, napi_default_jsproperty, NULL},
    {"inflateRaw", NULL, inflate_raw, NULL, NULL, NULL, napi_default_jsproperty, NULL},
    {"xtsSectors", NULL, xts_sectors, NULL, NULL, NULL, napi_default_jsproperty, NULL},
  };
  napi_property_descriptor digests[] = {
    {"digestOpen", NULL, digest_open, NULL, NULL, NULL, napi_default_jsproperty, NULL},
    {"digestUpdate", NULL, digest_update, NULL, NULL, NULL, napi_default_jsproperty, NULL},
    {"digestFinal", NULL, digest_final, NULL, NULL, NULL, napi_default_jsproperty, NULL},
  };
  find_openssl();
  find_openssl_digests();
  /* Without Node's OpenSSL those calls are left out, as in an addon built before they existed. */
  napi_define_properties(env, exports, sizeof props / sizeof props[0] - (ossl.found ? 0 : 1), props);
  if (omd.found) napi_define_properties(env, exports, sizeof digests / sizeof digests[0], digests);
  return exports;
}

NAPI_MODULE(hostio, init)
