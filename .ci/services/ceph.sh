#!/usr/bin/env bash
# Ceph for the RBD store's tests and benchmark: a one-node cluster (Debian 12's Ceph 16,
# started by hand: no cephadm, no systemd, no containers) on 127.0.0.1 only.
#
#   mon "a" (127.0.0.1:3300 msgr2, :6789 v1), mgr "x", one BlueStore OSD on a sparse file;
#   pools `images` and `vms` (one replica, rbd application), as in the Ceph/OpenStack guide;
#   cephx user client.glance: mon 'profile rbd', osd/mgr 'profile rbd pool=images';
#   cephx user client.nova (the compute node's, as the guide's client.cinder): mon 'profile rbd',
#   osd 'profile rbd pool=vms, profile rbd-read-only pool=images', mgr 'profile rbd pool=vms'.
#
# Safe to run again: it reuses the cluster in $DISKHUB_CEPH_DIR and starts only the daemons that
# are not running, then waits until `rbd ls images` works as client.glance. It ends by writing
# $DISKHUB_CEPH_DIR/env (CEPH_CONF, the keyring paths, pool and user) for tests to read.
# Ceph's ports are fixed, so there is one such cluster per machine. Stop it with
# `.ci/services/ceph.sh stop` (add `wipe` to delete its data as well).
set -euo pipefail

DIR=${DISKHUB_CEPH_DIR:-/var/tmp/diskhub-ceph}
OSD_BYTES=${DISKHUB_CEPH_OSD_BYTES:-10737418240} # apparent size of the sparse OSD file
WAIT=${DISKHUB_CEPH_WAIT:-180}                  # seconds allowed for each stage
CONF=$DIR/ceph.conf
export CEPH_CONF=$CONF
say() { echo "ceph: $*" >&2; }
fail() { say "$*"; [ -d "$DIR/log" ] && say "daemon logs are in $DIR/log"; exit 1; }
# Every admin command gets a deadline: a cluster that is not up yet must not hang the script.
admin() { timeout 60 ceph --connect-timeout 15 "$@"; }

# The PID of one of this cluster's daemons (its PID file, and its command line names our conf).
running() {
  local f=$DIR/run/$1.pid pid
  [ -s "$f" ] || return 1
  pid=$(cat "$f")
  [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- " $CONF " || return 1
  echo "$pid"
}

stop() {
  local name pid
  # OSD and mgr first, the mon last (the OSD reports itself down to it).
  for name in osd.0 mgr.x mon.a; do
    pid=$(running "$name") || continue
    say "stopping $name (pid $pid)"
    kill -TERM "$pid"
    for _ in $(seq 100); do [ -d "/proc/$pid" ] || break; sleep 0.2; done
    [ -d "/proc/$pid" ] && kill -KILL "$pid"
    rm -f "$DIR/run/$name.pid"
  done
  if [ "${1:-}" = wipe ] && [ -e "$DIR/.diskhub-ceph" ]; then rm -rf "$DIR"; say "removed $DIR"; fi
}
if [ "${1:-}" = stop ]; then stop "${2:-}"; exit 0; fi

[ "$(id -u)" = 0 ] || fail "run as root (the daemons write under $DIR)"
need=()
for bin in ceph-mon:ceph-mon ceph-mgr:ceph-mgr ceph-osd:ceph-osd rbd:ceph-common monmaptool:ceph-base; do
  command -v "${bin%%:*}" >/dev/null || need+=("${bin#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  say "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null 2>&1 \
    || { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; }
fi

daemon() { # daemon <binary> <type.id>
  if running "$2" >/dev/null; then return 0; fi
  say "starting $2"
  "$1" -c "$CONF" -n "$2" </dev/null >>"$DIR/log/$2.out" 2>&1 || fail "$1 -n $2 did not start"
}

create() {
  if [ -e "$DIR" ] && [ -n "$(ls -A "$DIR")" ]; then
    # A cluster whose creation was interrupted: start again from nothing (only our own dir).
    [ -e "$DIR/.diskhub-ceph" ] || fail "$DIR is not empty and was not made by this script"
    stop wipe
  fi
  mkdir -p "$DIR"/{run,log,crash,mon/a,mgr/x,osd/0,tmp}
  touch "$DIR/.diskhub-ceph"
  local fsid osd_uuid
  fsid=$(cat /proc/sys/kernel/random/uuid)
  osd_uuid=$(cat /proc/sys/kernel/random/uuid)
  # One OSD holds every object: pools of size 1, CRUSH choosing among OSDs (not hosts), no
  # autoscaler, and no warning about the missing redundancy, or the cluster never turns healthy.
  cat >"$CONF" <<EOF
[global]
fsid = $fsid
mon_host = [v2:127.0.0.1:3300,v1:127.0.0.1:6789]
public_addr = 127.0.0.1
cluster_addr = 127.0.0.1
ms_bind_ipv6 = false
auth_cluster_required = cephx
auth_service_required = cephx
auth_client_required = cephx
auth_allow_insecure_global_id_reclaim = false
run_dir = $DIR/run
crash_dir = $DIR/crash
log_file = $DIR/log/\$name.log
pid_file = $DIR/run/\$name.pid
admin_socket = $DIR/run/\$name.asok
osd_pool_default_size = 1
osd_pool_default_min_size = 1
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
osd_pool_default_pg_autoscale_mode = off
osd_crush_chooseleaf_type = 0
mon_allow_pool_size_one = true
mon_allow_pool_delete = true
mon_warn_on_pool_no_redundancy = false
mon_data_avail_warn = 2
mon_data_avail_crit = 1

[client]
# clients (rbd --id glance, librados) find their key here; the tests also pass it explicitly
keyring = $DIR/ceph.\$name.keyring
log_file = /dev/null
admin_socket =

[mon]
mon_data = $DIR/mon/\$id

[mgr]
mgr_data = $DIR/mgr/\$id

[osd]
osd_data = $DIR/osd/\$id
osd_objectstore = bluestore
# (not "block": BlueStore makes <osd_data>/block a symlink to this path)
bluestore_block_path = $DIR/osd/\$id/block.img
bluestore_block_create = true
bluestore_block_size = $OSD_BYTES
bdev_enable_discard = false
osd_memory_target = 1073741824
EOF
  # Every key goes into the mon's first keyring, so the mon knows them all from its start.
  local seed=$DIR/tmp/mon.keyring
  key() { CEPH_CONF=/dev/null ceph-authtool "$@" >/dev/null; }
  key --create-keyring "$seed" --gen-key -n mon. --cap mon 'allow *'
  key --create-keyring "$DIR/ceph.client.admin.keyring" --gen-key -n client.admin \
    --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' --cap mds 'allow *'
  key --create-keyring "$DIR/ceph.client.glance.keyring" --gen-key -n client.glance \
    --cap mon 'profile rbd' --cap osd 'profile rbd pool=images' --cap mgr 'profile rbd pool=images'
  key --create-keyring "$DIR/mgr/x/keyring" --gen-key -n mgr.x \
    --cap mon 'allow profile mgr' --cap osd 'allow *' --cap mds 'allow *'
  key --create-keyring "$DIR/osd/0/keyring" --gen-key -n osd.0 \
    --cap mon 'allow profile osd' --cap mgr 'allow profile osd' --cap osd 'allow *'
  for k in "$DIR/ceph.client.admin.keyring" "$DIR/ceph.client.glance.keyring" "$DIR/mgr/x/keyring" "$DIR/osd/0/keyring"; do
    key "$seed" --import-keyring "$k"
  done
  chmod 600 "$DIR"/*.keyring
  monmaptool --create --fsid "$fsid" --addv a '[v2:127.0.0.1:3300,v1:127.0.0.1:6789]' "$DIR/tmp/monmap" >/dev/null
  ceph-mon -c "$CONF" -i a --mkfs --monmap "$DIR/tmp/monmap" --keyring "$seed" >>"$DIR/log/mon.a.out" 2>&1 \
    || fail "ceph-mon --mkfs failed"
  rm -f "$seed"
  daemon ceph-mon mon.a
  daemon ceph-mgr mgr.x
  local id
  id=$(admin osd new "$osd_uuid") || fail "ceph osd new failed"
  [ "$id" = 0 ] || fail "the new OSD got id $id, not 0"
  ceph-osd -c "$CONF" -i 0 --mkfs --osd-uuid "$osd_uuid" >>"$DIR/log/osd.0.out" 2>&1 || fail "ceph-osd --mkfs failed"
  daemon ceph-osd osd.0
  admin osd pool create images 8 8 replicated >/dev/null || fail "cannot create pool images"
  admin osd pool create vms 8 8 replicated >/dev/null || fail "cannot create pool vms"
  touch "$DIR/.created"
}

until_ok() { # until_ok <what> <command...>: retries for $WAIT seconds
  local what=$1 deadline=$(( $(date +%s) + WAIT ))
  shift
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || fail "$what: not ready after ${WAIT}s"
    sleep 0.5
  done
}

if [ -e "$DIR/.created" ]; then
  mkdir -p "$DIR"/{run,log,crash}
  # A mon's ports held by something else (another cluster) would make ours fail obscurely.
  if ! running mon.a >/dev/null && (exec 3<>/dev/tcp/127.0.0.1/3300) 2>/dev/null; then
    fail "127.0.0.1:3300 is taken by another process (another Ceph cluster on this machine?)"
  fi
  daemon ceph-mon mon.a
  daemon ceph-mgr mgr.x
  daemon ceph-osd osd.0
else
  create
fi

until_ok "mon" admin mon stat
osd_up() { admin osd stat -f json | grep -q '"num_up_osds":1,.*"num_in_osds":1'; }
until_ok "osd.0 up and in" osd_up
if [ ! -e "$DIR/.pools-ready" ]; then
  # rbd pool init: the rbd application tag and the pool's rbd metadata, as Glance expects.
  timeout 120 rbd pool init images && timeout 120 rbd pool init vms || fail "rbd pool init failed"
  touch "$DIR/.pools-ready"
fi
until_ok "rbd ls images as client.glance" timeout 20 rbd --id glance ls images
mgr_up() { admin mgr stat | grep -q '"available": true'; }
until_ok "mgr" mgr_up
# The compute node's user (diskhub compute's RBD instance disks): clones of images' snapshots into
# vms. Made here rather than in create() so that a cluster made before it gets it too.
if [ ! -s "$DIR/ceph.client.nova.keyring" ]; then
  admin auth get-or-create client.nova mon 'profile rbd' \
    osd 'profile rbd pool=vms, profile rbd-read-only pool=images' mgr 'profile rbd pool=vms' \
    -o "$DIR/ceph.client.nova.keyring" || fail "cannot create client.nova"
  chmod 600 "$DIR/ceph.client.nova.keyring"
fi

cat >"$DIR/env" <<EOF
CEPH_CONF=$CONF
DISKHUB_CEPH_FSID=$(awk '$1 == "fsid" { print $3 }' "$CONF")
DISKHUB_CEPH_ADMIN_KEYRING=$DIR/ceph.client.admin.keyring
DISKHUB_CEPH_GLANCE_KEYRING=$DIR/ceph.client.glance.keyring
DISKHUB_CEPH_USER=glance
DISKHUB_CEPH_POOL=images
DISKHUB_CEPH_CLONE_POOL=vms
DISKHUB_CEPH_NOVA_USER=nova
DISKHUB_CEPH_NOVA_KEYRING=$DIR/ceph.client.nova.keyring
EOF
echo "ceph on 127.0.0.1:3300 (conf $CONF, users client.glance and client.nova, pools images and vms; env in $DIR/env)"
