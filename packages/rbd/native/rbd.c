/*
 * rbd: the part of librbd/librados (Ceph's C API, <rbd/librbd.h>, <rados/librados.h>) that an
 * image store needs, as an N-API addon. Every call that talks to the cluster returns a promise
 * and runs on a libuv worker thread, except reads and writes, which only queue librbd's
 * asynchronous I/O: the event loop never waits on the network.
 *
 *   connect / shutdown / fsid          - a cluster handle (cephx user, keyring, ceph.conf, timeouts)
 *   openPool / closePool               - an I/O context on a pool
 *   create / remove / rename / list    - images of a pool (rbd_create4, rbd_remove, rbd_rename, rbd_list2)
 *   open / close / size / resize       - one image (or one of its snapshots, read-only)
 *   write / drain / room               - streaming writes: copied, zero blocks skipped (thin
 *                                        provisioning), gathered into object-sized writes sent
 *                                        with rbd_aio_write2, several in flight; drain sends the
 *                                        rest, waits for them and reports the first error
 *   read                               - bytes of a range (rbd_aio_read2, completed without a
 *                                        worker thread)
 *   snapCreate / snapProtect /         - the snapshot Glance's layering needs (Nova and Cinder
 *   snapUnprotect / snapRemove /         clone from a protected snapshot); children lists the
 *   children                             clones that keep a snapshot in use
 *   watchers                           - how many clients have an image open for writing
 *
 * Errors reject with an Error whose `code` is the errno name (ENOENT, EBUSY, EACCES, ...),
 * `errno` the number, and whose message names the operation and strerror (never a key).
 * Handles are plain externals closed explicitly (a store owns them for its lifetime).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <node_api.h>
#include <rados/librados.h>
#include <rbd/librbd.h>

/* Object-sized writes a single image keeps in flight before write() waits: as many as rbd import
 * keeps (rbd_concurrent_management_ops, 10 by default). */
#define WRITES_IN_FLIGHT 10

enum kind { CLUSTER = 0x52424331, POOL = 0x52424332, IMAGE = 0x52424333 };

typedef struct {
  int kind;
  rados_t cluster;
  char fsid[64];
} cluster_t;

typedef struct {
  int kind;
  rados_ioctx_t io;
} pool_t;

typedef struct {
  int kind;
  rbd_image_t image;
  pthread_mutex_t lock;
  pthread_cond_t changed;
  size_t in_flight; /* bytes of aio writes not yet completed */
  int first_error;  /* the first failed aio write's -errno, reported by the next write/drain */
  /* the write being gathered (one writer at a time: the caller keeps one write in flight) */
  size_t object_size;
  char *pending;
  size_t pending_len;
  uint64_t pending_off;
} image_t;

typedef struct {
  image_t *im;
  char *data;
  size_t len;
} aio_write_t;

enum op {
  OP_CONNECT, OP_SHUTDOWN, OP_OPEN_POOL, OP_CREATE, OP_REMOVE, OP_RENAME, OP_LIST, OP_OPEN,
  OP_CLOSE, OP_RESIZE, OP_WRITE, OP_DRAIN, OP_SNAP_CREATE, OP_SNAP_PROTECT,
  OP_SNAP_UNPROTECT, OP_SNAP_REMOVE, OP_CHILDREN, OP_WATCHERS, OP_CLONE,
};

typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  enum op op;
  const char *what; /* the operation, for the error message */
  int rc;           /* 0 or -errno */
  cluster_t *cl;
  pool_t *pool;
  pool_t *pool2; /* clone: the child's pool */
  image_t *im;
  char *s1, *s2, *s3;
  uint64_t off, len;
  double timeout;
  bool read_only;
  /* write: the caller's views (kept alive by `hold`), and the zero-block size (0: write all) */
  struct iovec *iov;
  uint32_t iovcnt;
  size_t zero_block;
  napi_ref hold;
  int64_t got;
  /* list / children: "name" or "pool/name" strings */
  char **names;
  size_t count;
  void *out;
} job_t;

static napi_value make_error(napi_env env, const char *what, int err) {
  const char *name = strerrorname_np(err);
  char msg[256];
  snprintf(msg, sizeof msg, "%s: %s", what, strerror(err));
  napi_value code, text, error, num;
  napi_create_string_utf8(env, name ? name : "EIO", NAPI_AUTO_LENGTH, &code);
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &text);
  napi_create_error(env, code, text, &error);
  napi_create_int32(env, err, &num);
  napi_set_named_property(env, error, "errno", num);
  return error;
}

static napi_value throw_type(napi_env env, const char *msg) {
  napi_throw_type_error(env, "EINVAL", msg);
  return NULL;
}

static void *handle(napi_env env, napi_value v, int kind) {
  void *p = NULL;
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_external) return NULL;
  if (napi_get_value_external(env, v, &p) != napi_ok || p == NULL || *(int *)p != kind) return NULL;
  return p;
}

/* A UTF-8 string argument, malloc'd (NULL: not a string; "" allowed). */
static char *string_arg(napi_env env, napi_value v) {
  size_t len;
  if (napi_get_value_string_utf8(env, v, NULL, 0, &len) != napi_ok) return NULL;
  char *s = malloc(len + 1);
  if (s) napi_get_value_string_utf8(env, v, s, len + 1, &len);
  return s;
}

static bool number_arg(napi_env env, napi_value v, double *out) {
  return napi_get_value_double(env, v, out) == napi_ok && *out >= 0 && *out <= 9007199254740992.0;
}

/* ---------------------------------------------------------------- aio writes */

static void write_done(rbd_completion_t c, void *arg) {
  aio_write_t *w = arg;
  ssize_t r = rbd_aio_get_return_value(c);
  rbd_aio_release(c);
  pthread_mutex_lock(&w->im->lock);
  if (r < 0 && w->im->first_error == 0) w->im->first_error = (int)r;
  w->im->in_flight -= w->len;
  pthread_cond_broadcast(&w->im->changed);
  pthread_mutex_unlock(&w->im->lock);
  free(w->data);
  free(w);
}

/* Sends the image's pending bytes as one aio write (the buffer passes to the completion),
 * first waiting while WRITES_IN_FLIGHT objects' worth of bytes are on their way. */
static int flush_pending(image_t *im) {
  if (im->pending_len == 0) return 0;
  size_t len = im->pending_len;
  char *data = im->pending;
  uint64_t at = im->pending_off;
  im->pending = NULL;
  im->pending_len = 0;
  pthread_mutex_lock(&im->lock);
  while (im->in_flight > 0 && im->in_flight + len > WRITES_IN_FLIGHT * im->object_size && im->first_error == 0)
    pthread_cond_wait(&im->changed, &im->lock);
  int err = im->first_error;
  if (err == 0) im->in_flight += len;
  pthread_mutex_unlock(&im->lock);
  if (err) { free(data); return err; }
  aio_write_t *w = malloc(sizeof *w);
  rbd_completion_t c;
  int r = -ENOMEM;
  if (w) {
    w->im = im;
    w->data = data;
    w->len = len;
    r = rbd_aio_create_completion(w, write_done, &c);
    if (r == 0) {
      /* NOCACHE as rbd import writes: image data written once is not worth the OSD's cache */
      r = rbd_aio_write2(im->image, at, len, data, c, LIBRADOS_OP_FLAG_FADVISE_NOCACHE);
      if (r >= 0) return 0;
      rbd_aio_release(c);
    }
  }
  free(w);
  free(data);
  pthread_mutex_lock(&im->lock);
  im->in_flight -= len;
  pthread_cond_broadcast(&im->changed);
  pthread_mutex_unlock(&im->lock);
  return r;
}

/* Adds `len` bytes gathered from the iovecs at logical position `from`, for image offset `at`,
 * to the pending write; a pending write is sent when it reaches an object's end or the next
 * bytes do not follow it. Object-sized writes, as `rbd import` makes: a 1 MiB write per call
 * costs the OSD several times the requests for the same data. */
static int add_write(image_t *im, const struct iovec *iov, uint32_t iovcnt, size_t from, size_t len, uint64_t at) {
  size_t pos = 0;
  uint32_t i = 0;
  while (i < iovcnt && pos + iov[i].iov_len <= from) pos += iov[i++].iov_len;
  size_t skip = from - pos;
  while (len > 0) {
    if (im->pending_len && im->pending_off + im->pending_len != at) {
      int r = flush_pending(im);
      if (r) return r;
    }
    if (!im->pending) {
      if (!(im->pending = malloc(im->object_size))) return -ENOMEM;
      im->pending_off = at;
    }
    /* room up to the end of the object the pending write started in */
    size_t room = im->object_size - (size_t)(im->pending_off % im->object_size) - im->pending_len;
    size_t take = len < room ? len : room;
    for (size_t done = 0; done < take; i++, skip = 0) {
      size_t n = iov[i].iov_len - skip;
      if (n > take - done) n = take - done;
      memcpy(im->pending + im->pending_len + done, (char *)iov[i].iov_base + skip, n);
      done += n;
      if (skip + n < iov[i].iov_len) { skip += n; break; }
    }
    im->pending_len += take;
    at += take;
    len -= take;
    if (take == room) {
      int r = flush_pending(im);
      if (r) return r;
    }
  }
  return 0;
}

static bool all_zero(const struct iovec *iov, uint32_t iovcnt, size_t from, size_t len) {
  size_t pos = 0;
  for (uint32_t i = 0; i < iovcnt && len > 0; i++) {
    size_t n = iov[i].iov_len;
    if (pos + n > from) {
      size_t skip = from > pos ? from - pos : 0;
      size_t take = n - skip < len ? n - skip : len;
      const unsigned char *p = (const unsigned char *)iov[i].iov_base + skip;
      /* first byte, then memcmp against itself shifted by one: all bytes equal the first */
      if (p[0] != 0 || (take > 1 && memcmp(p, p + 1, take - 1) != 0)) return false;
      from += take;
      len -= take;
    }
    pos += n;
  }
  return true;
}

/* The write job: whole zero blocks (aligned to the image offset) are left unwritten, the data
 * between them goes out as one aio write per run. */
static int do_write(job_t *j) {
  size_t total = 0;
  for (uint32_t i = 0; i < j->iovcnt; i++) total += j->iov[i].iov_len;
  size_t run_start = 0, pos = 0;
  bool in_run = false;
  while (pos < total) {
    size_t block = total - pos;
    if (j->zero_block) {
      size_t to_boundary = j->zero_block - (size_t)((j->off + pos) % j->zero_block);
      if (to_boundary < block) block = to_boundary;
    }
    /* Only whole blocks are skipped: a partial one (at the end of the data) is written. */
    bool skip = j->zero_block && (j->off + pos) % j->zero_block == 0 && block == j->zero_block &&
                all_zero(j->iov, j->iovcnt, pos, block);
    if (skip && in_run) {
      int r = add_write(j->im, j->iov, j->iovcnt, run_start, pos - run_start, j->off + run_start);
      if (r) return r;
      in_run = false;
    } else if (!skip && !in_run) {
      run_start = pos;
      in_run = true;
    }
    pos += block;
  }
  if (in_run) return add_write(j->im, j->iov, j->iovcnt, run_start, total - run_start, j->off + run_start);
  return 0;
}

static int do_drain(image_t *im) {
  int sent = flush_pending(im);
  pthread_mutex_lock(&im->lock);
  while (im->in_flight > 0) pthread_cond_wait(&im->changed, &im->lock);
  int err = im->first_error ? im->first_error : sent;
  pthread_mutex_unlock(&im->lock);
  return err;
}

/* ---------------------------------------------------------------- jobs */

static int set_timeouts(rados_t c, double seconds) {
  if (seconds <= 0) return 0;
  char t[32];
  snprintf(t, sizeof t, "%.0f", seconds < 1 ? 1 : seconds);
  /* as glance_store's rados_connect_timeout: the mount, and each mon and OSD operation */
  int r = rados_conf_set(c, "client_mount_timeout", t);
  if (r == 0) r = rados_conf_set(c, "rados_mon_op_timeout", t);
  if (r == 0) r = rados_conf_set(c, "rados_osd_op_timeout", t);
  return r;
}

static int do_connect(job_t *j) {
  cluster_t *cl = calloc(1, sizeof *cl);
  if (!cl) return -ENOMEM;
  cl->kind = CLUSTER;
  int r = rados_create(&cl->cluster, j->s2[0] ? j->s2 : NULL);
  if (r < 0) { free(cl); return r; }
  j->what = "reading the Ceph configuration file";
  r = rados_conf_read_file(cl->cluster, j->s1[0] ? j->s1 : NULL);
  if (r == 0 && j->s3 && j->s3[0]) { j->what = "setting the keyring"; r = rados_conf_set(cl->cluster, "keyring", j->s3); }
  /* The library's own log goes nowhere: errors reach the caller as return codes. */
  if (r == 0) r = rados_conf_set(cl->cluster, "log_to_stderr", "false");
  /* librbd may send a write's buffer as it is instead of copying it first: each buffer here
   * belongs to its aio write until the completion frees it. */
  if (r == 0) r = rados_conf_set(cl->cluster, "rbd_disable_zero_copy_writes", "false");
  /* No client-side cache: uploads are written once, in order, and downloads read once; the
   * cache would only copy every byte through itself (rbd_cache is on by default). */
  if (r == 0) r = rados_conf_set(cl->cluster, "rbd_cache", "false");
  if (r == 0) r = set_timeouts(cl->cluster, j->timeout);
  if (r == 0) { j->what = "connecting to the Ceph cluster"; r = rados_connect(cl->cluster); }
  if (r == 0) { j->what = "reading the cluster's fsid"; r = rados_cluster_fsid(cl->cluster, cl->fsid, sizeof cl->fsid); if (r > 0) r = 0; }
  if (r < 0) { rados_shutdown(cl->cluster); free(cl); return r; }
  j->out = cl;
  return 0;
}

static int do_list(job_t *j) {
  size_t max = 64;
  rbd_image_spec_t *specs = NULL;
  int r;
  for (;;) {
    specs = calloc(max, sizeof *specs);
    if (!specs) return -ENOMEM;
    r = rbd_list2(j->pool->io, specs, &max);
    if (r != -ERANGE) break;
    free(specs);
  }
  if (r < 0) { free(specs); return r; }
  j->names = calloc(max ? max : 1, sizeof(char *));
  for (size_t i = 0; j->names && i < max; i++) j->names[j->count++] = strdup(specs[i].name);
  rbd_image_spec_list_cleanup(specs, max);
  free(specs);
  return j->names ? 0 : -ENOMEM;
}

static int do_children(job_t *j) {
  size_t max = 16;
  rbd_linked_image_spec_t *specs = NULL;
  int r;
  for (;;) {
    specs = calloc(max, sizeof *specs);
    if (!specs) return -ENOMEM;
    r = rbd_list_children3(j->im->image, specs, &max);
    if (r != -ERANGE) break;
    free(specs);
  }
  if (r < 0) { free(specs); return r; }
  j->names = calloc(max ? max : 1, sizeof(char *));
  for (size_t i = 0; j->names && i < max; i++) {
    char *s = NULL;
    if (asprintf(&s, "%s/%s", specs[i].pool_name, specs[i].image_name) < 0) s = NULL;
    if (s) j->names[j->count++] = s;
  }
  rbd_linked_image_spec_list_cleanup(specs, max);
  free(specs);
  return j->names ? 0 : -ENOMEM;
}

/* The number of clients watching the image (a client that opened it read-write watches it). */
static int do_watchers(job_t *j) {
  size_t max = 8;
  for (;;) {
    rbd_image_watcher_t *w = calloc(max, sizeof *w);
    if (!w) return -ENOMEM;
    int r = rbd_watchers_list(j->im->image, w, &max);
    if (r == -ERANGE) { free(w); continue; }
    if (r == 0) { rbd_watchers_list_cleanup(w, max); j->got = (int64_t)max; }
    free(w);
    return r;
  }
}

static void execute(napi_env env, void *data) {
  (void)env;
  job_t *j = data;
  int r = 0;
  switch (j->op) {
    case OP_CONNECT: r = do_connect(j); break;
    case OP_SHUTDOWN: rados_shutdown(j->cl->cluster); break;
    case OP_OPEN_POOL: {
      pool_t *p = calloc(1, sizeof *p);
      if (!p) { r = -ENOMEM; break; }
      p->kind = POOL;
      r = rados_ioctx_create(j->cl->cluster, j->s1, &p->io);
      if (r < 0) free(p); else j->out = p;
      break;
    }
    case OP_CREATE: {
      rbd_image_options_t opts;
      rbd_image_options_create(&opts);
      /* The object size (order) is the store's chunk size, as glance_store sets it; the image
       * features are the cluster's rbd_default_features (layering at least, for clones). */
      r = rbd_image_options_set_uint64(opts, RBD_IMAGE_OPTION_ORDER, j->len);
      if (r == 0) r = rbd_create4(j->pool->io, j->s1, j->off, opts);
      rbd_image_options_destroy(opts);
      break;
    }
    case OP_REMOVE: r = rbd_remove(j->pool->io, j->s1); break;
    case OP_CLONE: {
      /* A copy-on-write child of a protected snapshot, as Nova's rbd_utils.RBDDriver.clone makes
       * it: the features are the cluster's rbd_default_features (librbd's default when none are
       * given), the object size the parent's. */
      rbd_image_options_t opts;
      rbd_image_options_create(&opts);
      r = rbd_clone3(j->pool->io, j->s1, j->s2, j->pool2->io, j->s3, opts);
      rbd_image_options_destroy(opts);
      break;
    }
    case OP_RENAME: r = rbd_rename(j->pool->io, j->s1, j->s2); break;
    case OP_LIST: r = do_list(j); break;
    case OP_OPEN: {
      image_t *im = calloc(1, sizeof *im);
      if (!im) { r = -ENOMEM; break; }
      im->kind = IMAGE;
      const char *snap = j->s2 && j->s2[0] ? j->s2 : NULL;
      r = j->read_only ? rbd_open_read_only(j->pool->io, j->s1, &im->image, snap)
                       : rbd_open(j->pool->io, j->s1, &im->image, snap);
      if (r < 0) { free(im); break; }
      rbd_image_info_t st;
      im->object_size = rbd_stat(im->image, &st, sizeof st) == 0 && st.obj_size ? st.obj_size : 4u << 20;
      pthread_mutex_init(&im->lock, NULL);
      pthread_cond_init(&im->changed, NULL);
      j->out = im;
      break;
    }
    case OP_CLOSE:
      do_drain(j->im);
      r = rbd_close(j->im->image);
      break;
    case OP_RESIZE: r = rbd_resize(j->im->image, j->off); break;
    case OP_WRITE: r = do_write(j); break;
    case OP_DRAIN: r = do_drain(j->im); break;
    case OP_SNAP_CREATE:
      /* No quiesce round (asking the image's other watchers, such as rbd-nbd, to pause I/O):
       * the store is the only writer, and has drained its writes. */
      r = rbd_snap_create2(j->im->image, j->s1, RBD_SNAP_CREATE_SKIP_QUIESCE, NULL, NULL);
      break;
    case OP_SNAP_PROTECT: r = rbd_snap_protect(j->im->image, j->s1); break;
    case OP_SNAP_UNPROTECT: r = rbd_snap_unprotect(j->im->image, j->s1); break;
    case OP_SNAP_REMOVE: r = rbd_snap_remove(j->im->image, j->s1); break;
    case OP_CHILDREN: r = do_children(j); break;
    case OP_WATCHERS: r = do_watchers(j); break;
  }
  j->rc = r < 0 ? r : 0;
}

static void free_job(napi_env env, job_t *j) {
  if (j->hold) napi_delete_reference(env, j->hold);
  for (size_t i = 0; i < j->count; i++) free(j->names[i]);
  free(j->names);
  free(j->s1);
  free(j->s2);
  free(j->s3);
  free(j->iov);
  free(j);
}

static void complete(napi_env env, napi_status status, void *data) {
  job_t *j = data;
  napi_value result = NULL;
  if (status != napi_ok && j->rc == 0) j->rc = -ECANCELED;
  if (j->rc < 0) {
    napi_reject_deferred(env, j->deferred, make_error(env, j->what, -j->rc));
  } else {
    switch (j->op) {
      case OP_CONNECT: case OP_OPEN_POOL: case OP_OPEN:
        napi_create_external(env, j->out, NULL, NULL, &result);
        break;
      case OP_WATCHERS:
        napi_create_double(env, (double)j->got, &result);
        break;
      case OP_LIST: case OP_CHILDREN:
        napi_create_array_with_length(env, j->count, &result);
        for (size_t i = 0; i < j->count; i++) {
          napi_value s;
          napi_create_string_utf8(env, j->names[i], NAPI_AUTO_LENGTH, &s);
          napi_set_element(env, result, (uint32_t)i, s);
        }
        break;
      case OP_SHUTDOWN: free(j->cl); break;
      case OP_CLOSE:
        free(j->im->pending);
        pthread_mutex_destroy(&j->im->lock);
        pthread_cond_destroy(&j->im->changed);
        j->im->kind = 0;
        free(j->im);
        break;
      default: break;
    }
    if (!result) napi_get_undefined(env, &result);
    napi_resolve_deferred(env, j->deferred, result);
  }
  napi_delete_async_work(env, j->work);
  free_job(env, j);
}

/* Queues job `j` and returns its promise (frees it on failure). */
static napi_value start(napi_env env, job_t *j) {
  napi_value promise, name;
  if (napi_create_promise(env, &j->deferred, &promise) != napi_ok) { free_job(env, j); return NULL; }
  napi_create_string_utf8(env, "rbd", NAPI_AUTO_LENGTH, &name);
  if (napi_create_async_work(env, NULL, name, execute, complete, j, &j->work) != napi_ok ||
      napi_queue_async_work(env, j->work) != napi_ok) {
    napi_reject_deferred(env, j->deferred, make_error(env, j->what, EAGAIN));
    free_job(env, j);
  }
  return promise;
}

static job_t *new_job(napi_env env, enum op op, const char *what) {
  job_t *j = calloc(1, sizeof *j);
  if (!j) napi_throw_error(env, "ENOMEM", "rbd: out of memory");
  else { j->op = op; j->what = what; }
  return j;
}

#define ARGS(n)                                                                   \
  napi_value argv[n];                                                             \
  size_t argc = n;                                                                \
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < n) \
    return throw_type(env, "rbd: wrong number of arguments");

/* connect(confPath, id, keyringPath, timeoutSeconds) -> Promise<cluster> */
static napi_value js_connect(napi_env env, napi_callback_info info) {
  ARGS(4);
  job_t *j = new_job(env, OP_CONNECT, "creating the cluster handle");
  if (!j) return NULL;
  j->s1 = string_arg(env, argv[0]);
  j->s2 = string_arg(env, argv[1]);
  j->s3 = string_arg(env, argv[2]);
  if (!j->s1 || !j->s2 || !j->s3 || !number_arg(env, argv[3], &j->timeout)) {
    free_job(env, j);
    return throw_type(env, "rbd: connect(conf, id, keyring, timeout)");
  }
  return start(env, j);
}

/* fsid(cluster) -> string (read at connect) */
static napi_value js_fsid(napi_env env, napi_callback_info info) {
  ARGS(1);
  cluster_t *cl = handle(env, argv[0], CLUSTER);
  if (!cl) return throw_type(env, "rbd: not a cluster handle");
  napi_value s;
  napi_create_string_utf8(env, cl->fsid, NAPI_AUTO_LENGTH, &s);
  return s;
}

static napi_value js_shutdown(napi_env env, napi_callback_info info) {
  ARGS(1);
  cluster_t *cl = handle(env, argv[0], CLUSTER);
  if (!cl) return throw_type(env, "rbd: not a cluster handle");
  cl->kind = 0; /* no new work on it */
  job_t *j = new_job(env, OP_SHUTDOWN, "shutting down");
  if (!j) return NULL;
  j->cl = cl;
  return start(env, j);
}

static napi_value js_open_pool(napi_env env, napi_callback_info info) {
  ARGS(2);
  cluster_t *cl = handle(env, argv[0], CLUSTER);
  if (!cl) return throw_type(env, "rbd: not a cluster handle");
  job_t *j = new_job(env, OP_OPEN_POOL, "opening the pool");
  if (!j) return NULL;
  j->cl = cl;
  if (!(j->s1 = string_arg(env, argv[1]))) { free_job(env, j); return throw_type(env, "rbd: pool name"); }
  return start(env, j);
}

static napi_value js_close_pool(napi_env env, napi_callback_info info) {
  ARGS(1);
  pool_t *p = handle(env, argv[0], POOL);
  if (!p) return throw_type(env, "rbd: not a pool handle");
  p->kind = 0;
  rados_ioctx_destroy(p->io);
  free(p);
  return NULL;
}

/* Jobs on a pool with one or two names: create(pool, name, size, order), remove(pool, name),
 * rename(pool, from, to), list(pool). */
static napi_value pool_job(napi_env env, napi_callback_info info, enum op op, const char *what, int names) {
  napi_value argv[4];
  size_t argc = 4;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  pool_t *p = argc >= 1 ? handle(env, argv[0], POOL) : NULL;
  if (!p) return throw_type(env, "rbd: not a pool handle");
  job_t *j = new_job(env, op, what);
  if (!j) return NULL;
  j->pool = p;
  bool ok = argc >= (size_t)(1 + names);
  if (ok && names >= 1) ok = (j->s1 = string_arg(env, argv[1])) != NULL;
  if (ok && names >= 2) ok = (j->s2 = string_arg(env, argv[2])) != NULL;
  if (ok && op == OP_CREATE) {
    double size, order;
    ok = argc >= 4 && number_arg(env, argv[2], &size) && number_arg(env, argv[3], &order) && order >= 12 && order <= 26;
    j->off = (uint64_t)size;
    j->len = (uint64_t)order;
  }
  if (!ok) { free_job(env, j); return throw_type(env, "rbd: bad arguments"); }
  return start(env, j);
}
static napi_value js_create(napi_env env, napi_callback_info info) { return pool_job(env, info, OP_CREATE, "creating the image", 1); }
static napi_value js_remove(napi_env env, napi_callback_info info) { return pool_job(env, info, OP_REMOVE, "removing the image", 1); }
static napi_value js_rename(napi_env env, napi_callback_info info) { return pool_job(env, info, OP_RENAME, "renaming the image", 2); }
static napi_value js_list(napi_env env, napi_callback_info info) { return pool_job(env, info, OP_LIST, "listing the pool's images", 0); }

/* clone(parentPool, parent, snapshot, childPool, child) -> Promise<void> */
static napi_value js_clone(napi_env env, napi_callback_info info) {
  ARGS(5);
  pool_t *p = handle(env, argv[0], POOL), *p2 = handle(env, argv[3], POOL);
  if (!p || !p2) return throw_type(env, "rbd: not a pool handle");
  job_t *j = new_job(env, OP_CLONE, "cloning the snapshot");
  if (!j) return NULL;
  j->pool = p;
  j->pool2 = p2;
  j->s1 = string_arg(env, argv[1]);
  j->s2 = string_arg(env, argv[2]);
  j->s3 = string_arg(env, argv[4]);
  if (!j->s1 || !j->s2 || !j->s3) {
    free_job(env, j);
    return throw_type(env, "rbd: clone(parentPool, parent, snapshot, childPool, child)");
  }
  return start(env, j);
}

/* open(pool, name, snapshot ("" for the head), readOnly) -> Promise<image> */
static napi_value js_open(napi_env env, napi_callback_info info) {
  ARGS(4);
  pool_t *p = handle(env, argv[0], POOL);
  if (!p) return throw_type(env, "rbd: not a pool handle");
  job_t *j = new_job(env, OP_OPEN, "opening the image");
  if (!j) return NULL;
  j->pool = p;
  j->s1 = string_arg(env, argv[1]);
  j->s2 = string_arg(env, argv[2]);
  if (!j->s1 || !j->s2 || napi_get_value_bool(env, argv[3], &j->read_only) != napi_ok) {
    free_job(env, j);
    return throw_type(env, "rbd: open(pool, name, snapshot, readOnly)");
  }
  return start(env, j);
}

/* Jobs on an image: close, drain, children (no argument); resize (size); snap* (name). */
static napi_value image_job(napi_env env, napi_callback_info info, enum op op, const char *what) {
  napi_value argv[2];
  size_t argc = 2;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  image_t *im = argc >= 1 ? handle(env, argv[0], IMAGE) : NULL;
  if (!im) return throw_type(env, "rbd: not an image handle");
  job_t *j = new_job(env, op, what);
  if (!j) return NULL;
  j->im = im;
  bool ok = true;
  if (op == OP_RESIZE) {
    double size;
    ok = argc >= 2 && number_arg(env, argv[1], &size);
    j->off = (uint64_t)size;
  } else if (op >= OP_SNAP_CREATE && op <= OP_SNAP_REMOVE) {
    ok = argc >= 2 && (j->s1 = string_arg(env, argv[1])) != NULL;
  }
  if (!ok) { free_job(env, j); return throw_type(env, "rbd: bad arguments"); }
  if (op == OP_CLOSE) im->kind = 0; /* no new work on it */
  return start(env, j);
}
static napi_value js_close(napi_env env, napi_callback_info info) { return image_job(env, info, OP_CLOSE, "closing the image"); }
static napi_value js_drain(napi_env env, napi_callback_info info) { return image_job(env, info, OP_DRAIN, "writing the image"); }
static napi_value js_resize(napi_env env, napi_callback_info info) { return image_job(env, info, OP_RESIZE, "resizing the image"); }
static napi_value js_children(napi_env env, napi_callback_info info) { return image_job(env, info, OP_CHILDREN, "listing the snapshot's clones"); }
static napi_value js_watchers(napi_env env, napi_callback_info info) { return image_job(env, info, OP_WATCHERS, "listing the image's watchers"); }
static napi_value js_snap_create(napi_env env, napi_callback_info info) { return image_job(env, info, OP_SNAP_CREATE, "creating the snapshot"); }
static napi_value js_snap_protect(napi_env env, napi_callback_info info) { return image_job(env, info, OP_SNAP_PROTECT, "protecting the snapshot"); }
static napi_value js_snap_unprotect(napi_env env, napi_callback_info info) { return image_job(env, info, OP_SNAP_UNPROTECT, "unprotecting the snapshot"); }
static napi_value js_snap_remove(napi_env env, napi_callback_info info) { return image_job(env, info, OP_SNAP_REMOVE, "removing the snapshot"); }

/* size(image) -> number (librbd keeps it in memory: no I/O) */
static napi_value js_size(napi_env env, napi_callback_info info) {
  ARGS(1);
  image_t *im = handle(env, argv[0], IMAGE);
  if (!im) return throw_type(env, "rbd: not an image handle");
  uint64_t size;
  int r = rbd_get_size(im->image, &size);
  if (r < 0) { napi_throw(env, make_error(env, "reading the image's size", -r)); return NULL; }
  napi_value v;
  napi_create_double(env, (double)size, &v);
  return v;
}

/* Whether a write() now copies and sends without waiting (or would report an earlier error). */
static bool has_room(image_t *im) {
  pthread_mutex_lock(&im->lock);
  bool room = im->first_error != 0 || im->in_flight + 2 * im->object_size <= WRITES_IN_FLIGHT * im->object_size;
  pthread_mutex_unlock(&im->lock);
  return room;
}

/* room(image) -> boolean: see has_room. */
static napi_value js_room(napi_env env, napi_callback_info info) {
  ARGS(1);
  image_t *im = handle(env, argv[0], IMAGE);
  if (!im) return throw_type(env, "rbd: not an image handle");
  napi_value v;
  napi_get_boolean(env, has_room(im), &v);
  return v;
}

/* write(image, offset, views, zeroBlock) -> Promise: settles once the data is copied and sent
 * (not yet stored: drain says that); the views may be reused after it resolves. */
static napi_value js_write(napi_env env, napi_callback_info info) {
  ARGS(4);
  image_t *im = handle(env, argv[0], IMAGE);
  if (!im) return throw_type(env, "rbd: not an image handle");
  double off, zero_block;
  bool is_array;
  if (!number_arg(env, argv[1], &off) || !number_arg(env, argv[3], &zero_block) ||
      napi_is_array(env, argv[2], &is_array) != napi_ok || !is_array)
    return throw_type(env, "rbd: write(image, offset, views, zeroBlock)");
  job_t *j = new_job(env, OP_WRITE, "writing the image");
  if (!j) return NULL;
  j->im = im;
  j->off = (uint64_t)off;
  j->zero_block = (size_t)zero_block;
  napi_get_array_length(env, argv[2], &j->iovcnt);
  j->iov = calloc(j->iovcnt ? j->iovcnt : 1, sizeof *j->iov);
  if (!j->iov) { free_job(env, j); napi_throw_error(env, "ENOMEM", "rbd: out of memory"); return NULL; }
  for (uint32_t i = 0; i < j->iovcnt; i++) {
    napi_value view;
    napi_typedarray_type type;
    size_t length;
    void *data;
    if (napi_get_element(env, argv[2], i, &view) != napi_ok ||
        napi_get_typedarray_info(env, view, &type, &length, &data, NULL, NULL) != napi_ok || type != napi_uint8_array) {
      free_job(env, j);
      return throw_type(env, "rbd: write views must be Uint8Arrays");
    }
    j->iov[i].iov_base = data;
    j->iov[i].iov_len = length;
  }
  /* With room for two more objects in flight, copying the data and sending the writes cannot
   * wait (a call fills at most two pending writes), so it happens here: rbd_aio_write2 only
   * queues. A hop to a worker thread and back per call cost more than the copy, on a busy
   * machine most of all. Without that room a worker waits for it (callers that wait for
   * room() first never get there). */
  if (has_room(im)) {
    napi_value promise;
    napi_deferred deferred;
    int r = do_write(j);
    napi_create_promise(env, &deferred, &promise);
    if (r < 0) napi_reject_deferred(env, deferred, make_error(env, j->what, -r));
    else { napi_value u; napi_get_undefined(env, &u); napi_resolve_deferred(env, deferred, u); }
    free_job(env, j);
    return promise;
  }
  napi_create_reference(env, argv[2], 1, &j->hold);
  return start(env, j);
}

/* A read in flight: librbd completes it on one of its own threads, which hands the result to
 * the JavaScript thread through a thread-safe function. No libuv worker waits for it: a
 * download keeps several reads in flight, and those workers are few (four) and shared. */
typedef struct {
  napi_deferred deferred;
  napi_ref hold; /* the buffer being read into */
  napi_threadsafe_function tsfn;
  ssize_t r;
} aio_read_t;

static void read_settle(napi_env env, napi_value js_cb, void *context, void *data) {
  (void)js_cb;
  (void)context;
  aio_read_t *a = data;
  if (env) {
    if (a->r < 0) napi_reject_deferred(env, a->deferred, make_error(env, "reading the image", (int)-a->r));
    else {
      napi_value n;
      napi_create_double(env, (double)a->r, &n);
      napi_resolve_deferred(env, a->deferred, n);
    }
    napi_delete_reference(env, a->hold);
  }
  free(a);
}

static void read_done(rbd_completion_t c, void *arg) {
  aio_read_t *a = arg;
  a->r = rbd_aio_get_return_value(c);
  rbd_aio_release(c);
  napi_threadsafe_function tsfn = a->tsfn;
  napi_call_threadsafe_function(tsfn, a, napi_tsfn_blocking);
  napi_release_threadsafe_function(tsfn, napi_tsfn_release);
}

/* read(image, offset, buffer) -> Promise<bytes read> (fewer only at the image's end) */
static napi_value js_read(napi_env env, napi_callback_info info) {
  ARGS(3);
  image_t *im = handle(env, argv[0], IMAGE);
  if (!im) return throw_type(env, "rbd: not an image handle");
  double off;
  napi_typedarray_type type;
  size_t length;
  void *data;
  if (!number_arg(env, argv[1], &off) ||
      napi_get_typedarray_info(env, argv[2], &type, &length, &data, NULL, NULL) != napi_ok || type != napi_uint8_array)
    return throw_type(env, "rbd: read(image, offset, buffer)");
  aio_read_t *a = calloc(1, sizeof *a);
  if (!a) { napi_throw_error(env, "ENOMEM", "rbd: out of memory"); return NULL; }
  napi_value promise, name;
  napi_create_promise(env, &a->deferred, &promise);
  napi_create_string_utf8(env, "rbd read", NAPI_AUTO_LENGTH, &name);
  int r = -EAGAIN;
  if (napi_create_threadsafe_function(env, NULL, NULL, name, 0, 1, NULL, NULL, NULL, read_settle, &a->tsfn) == napi_ok) {
    napi_create_reference(env, argv[2], 1, &a->hold);
    rbd_completion_t c;
    r = rbd_aio_create_completion(a, read_done, &c);
    if (r == 0) {
      r = rbd_aio_read2(im->image, (uint64_t)off, length, data, c, LIBRADOS_OP_FLAG_FADVISE_SEQUENTIAL);
      if (r >= 0) return promise;
      rbd_aio_release(c);
    }
    napi_delete_reference(env, a->hold);
    napi_release_threadsafe_function(a->tsfn, napi_tsfn_abort);
  }
  napi_reject_deferred(env, a->deferred, make_error(env, "reading the image", -r));
  free(a);
  return promise;
}

NAPI_MODULE_INIT() {
  napi_property_descriptor fns[] = {
    {"connect", NULL, js_connect, NULL, NULL, NULL, napi_default, NULL},
    {"fsid", NULL, js_fsid, NULL, NULL, NULL, napi_default, NULL},
    {"shutdown", NULL, js_shutdown, NULL, NULL, NULL, napi_default, NULL},
    {"openPool", NULL, js_open_pool, NULL, NULL, NULL, napi_default, NULL},
    {"closePool", NULL, js_close_pool, NULL, NULL, NULL, napi_default, NULL},
    {"create", NULL, js_create, NULL, NULL, NULL, napi_default, NULL},
    {"remove", NULL, js_remove, NULL, NULL, NULL, napi_default, NULL},
    {"rename", NULL, js_rename, NULL, NULL, NULL, napi_default, NULL},
    {"list", NULL, js_list, NULL, NULL, NULL, napi_default, NULL},
    {"open", NULL, js_open, NULL, NULL, NULL, napi_default, NULL},
    {"clone", NULL, js_clone, NULL, NULL, NULL, napi_default, NULL},
    {"close", NULL, js_close, NULL, NULL, NULL, napi_default, NULL},
    {"size", NULL, js_size, NULL, NULL, NULL, napi_default, NULL},
    {"resize", NULL, js_resize, NULL, NULL, NULL, napi_default, NULL},
    {"write", NULL, js_write, NULL, NULL, NULL, napi_default, NULL},
    {"drain", NULL, js_drain, NULL, NULL, NULL, napi_default, NULL},
    {"room", NULL, js_room, NULL, NULL, NULL, napi_default, NULL},
    {"read", NULL, js_read, NULL, NULL, NULL, napi_default, NULL},
    {"snapCreate", NULL, js_snap_create, NULL, NULL, NULL, napi_default, NULL},
    {"snapProtect", NULL, js_snap_protect, NULL, NULL, NULL, napi_default, NULL},
    {"snapUnprotect", NULL, js_snap_unprotect, NULL, NULL, NULL, napi_default, NULL},
    {"snapRemove", NULL, js_snap_remove, NULL, NULL, NULL, napi_default, NULL},
    {"children", NULL, js_children, NULL, NULL, NULL, napi_default, NULL},
    {"watchers", NULL, js_watchers, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof fns / sizeof fns[0], fns);
  return exports;
}
