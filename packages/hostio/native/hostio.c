/*
 * hostio: the few Linux file calls Node.js does not expose and a disk image engine needs.
 *   lseek(SEEK_DATA / SEEK_HOLE)  - find a sparse file's data without reading its holes
 *                                   (what qemu-img's file driver uses for block status);
 *   fallocate(PUNCH_HOLE)         - turn a zeroed range back into a hole;
 *   fallocate(ZERO_RANGE)         - zero a range without writing it;
 *   fallocate(0)                  - preallocate (qemu-img's preallocation=falloc);
 *   fallocate(KEEP_SIZE), async   - reserve blocks just before a large write (reserve);
 *   pageOffset(view)              - where a typed array's bytes start within a memory page,
 *                                   so I/O buffers can be page-aligned as qemu-img's are.
 * All calls but reserve are synchronous: they touch metadata only and return in microseconds
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
#include <linux/falloc.h>
#include <node_api.h>

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
    default: return "EIO";
  }
}

/* An Error "what: strerror(e)" whose `code` is the errno name. */
static napi_value errno_error(napi_env env, const char *what, int e) {
  char msg[160];
  snprintf(msg, sizeof msg, "%s: %s", what, strerror(e));
  napi_value code, text, error;
  napi_create_string_utf8(env, errno_name(e), NAPI_AUTO_LENGTH, &code);
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &text);
  napi_create_error(env, code, text, &error);
  return error;
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
typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  int fd;
  off_t offset, length;
  int err;
} reserve_job;

static void reserve_execute(napi_env env, void *data) {
  (void)env;
  reserve_job *job = data;
  int r;
  do r = fallocate(job->fd, FALLOC_FL_KEEP_SIZE, job->offset, job->length);
  while (r < 0 && errno == EINTR);
  job->err = r < 0 ? errno : 0;
}

static void reserve_complete(napi_env env, napi_status status, void *data) {
  reserve_job *job = data;
  if (status == napi_ok && job->err == 0) {
    napi_value undefined;
    napi_get_undefined(env, &undefined);
    napi_resolve_deferred(env, job->deferred, undefined);
  } else {
    napi_reject_deferred(env, job->deferred, errno_error(env, "fallocate", status == napi_ok ? job->err : EIO));
  }
  napi_delete_async_work(env, job->work);
  free(job);
}

static napi_value reserve(napi_env env, napi_callback_info info) {
  int fd;
  double nums[2];
  if (!get_args(env, info, 3, &fd, nums)) return NULL;
  reserve_job *job = calloc(1, sizeof *job);
  if (!job) {
    napi_throw_error(env, "ENOMEM", "hostio: out of memory");
    return NULL;
  }
  job->fd = fd;
  job->offset = (off_t)nums[0];
  job->length = (off_t)nums[1];
  napi_value promise, name;
  napi_create_promise(env, &job->deferred, &promise);
  napi_create_string_utf8(env, "hostio.reserve", NAPI_AUTO_LENGTH, &name);
  if (job->length == 0 ||
      napi_create_async_work(env, NULL, name, reserve_execute, reserve_complete, job, &job->work) != napi_ok ||
      napi_queue_async_work(env, job->work) != napi_ok) {
    napi_value undefined;
    napi_get_undefined(env, &undefined);
    napi_resolve_deferred(env, job->deferred, undefined);
    if (job->work) napi_delete_async_work(env, job->work);
    free(job);
  }
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

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    {"seek", NULL, seek, NULL, NULL, NULL, napi_enumerable, NULL},
    {"punchHole", NULL, punch_hole, NULL, NULL, NULL, napi_enumerable, NULL},
    {"zeroRange", NULL, zero_range, NULL, NULL, NULL, napi_enumerable, NULL},
    {"allocate", NULL, allocate, NULL, NULL, NULL, napi_enumerable, NULL},
    {"reserve", NULL, reserve, NULL, NULL, NULL, napi_enumerable, NULL},
    {"pageOffset", NULL, page_offset, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}

NAPI_MODULE(hostio, init)
