#!/usr/bin/env bash
# OpenStack Swift for the Swift and S3 store tests: Debian's Swift as a one-node, one-replica
# cluster on loopback, its proxy serving the native Swift API (tempauth) and the S3 API
# (s3api middleware) on one port. Test data only: no replicators, auditors or updaters run.
# Installs Debian's Swift packages when they are missing (as root). Safe to run again: a healthy
# instance is left alone, a dead one is restarted from scratch.
#
#   DISKHUB_SWIFT_PORT  proxy port on 127.0.0.1 (default 8480; the account, container and
#                       object servers take the next three ports, memcached the fourth)
#   DISKHUB_SWIFT_DIR   configuration, rings, data, logs and pids (default /var/tmp/diskhub-swift)
#
# Swift API: auth http://127.0.0.1:8480/auth/v1.0, user test:tester, key testing (v1 auth:
#            X-Auth-User/X-Auth-Key give X-Storage-Url and X-Auth-Token)
# S3 API:    endpoint http://127.0.0.1:8480, access key test:tester, secret testing, region us-east-1
# Stop:      .ci/services/swift.sh stop
set -euo pipefail
port=${DISKHUB_SWIFT_PORT:-8480}
dir=${DISKHUB_SWIFT_DIR:-/var/tmp/diskhub-swift}
auth=http://127.0.0.1:$port/auth/v1.0

stop() {
  [ -f "$dir/pids" ] || return 0
  local pids; pids=$(cat "$dir/pids")
  for pid in $pids; do kill "$pid" 2>/dev/null || true; done
  for _ in $(seq 1 40); do
    local alive=""
    for pid in $pids; do if kill -0 "$pid" 2>/dev/null; then alive=1; fi; done
    [ -z "$alive" ] && break
    sleep 0.25
  done
  rm -f "$dir/pids"
}

# A token from tempauth means the proxy, memcached and the account server all answer.
ready() {
  curl -sf -m 5 -o /dev/null -H 'X-Auth-User: test:tester' -H 'X-Auth-Key: testing' "$auth"
}

if [ "${1:-}" = stop ]; then stop; exit 0; fi
if ready; then echo "swift already running: $auth"; exit 0; fi

# Debian's packages (the same lines as in .ci/apt-packages.txt), installed when missing so
# that the script also works on its own on a fresh machine.
packages="swift swift-proxy swift-account swift-container swift-object memcached python3-swiftclient"
missing=""
for tool in swift-proxy-server swift-account-server swift-container-server swift-object-server swift-ring-builder memcached swift; do
  command -v "$tool" >/dev/null || missing="$missing $tool"
done
if [ -n "$missing" ]; then
  if [ "$(id -u)" != 0 ]; then echo "not installed:$missing (as root: apt-get install $packages)" >&2; exit 1; fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends $packages >/dev/null || { apt-get update -qq && apt-get install -y -qq --no-install-recommends $packages >/dev/null; }
fi

stop
rm -rf "$dir"
mkdir -p "$dir/srv/disk1" "$dir/cache" "$dir/log"

# Every server reads /etc/swift/swift.conf for the hash path prefix/suffix (Debian's package
# ships one); write a minimal one only where it is missing.
if [ ! -f /etc/swift/swift.conf ]; then
  mkdir -p /etc/swift
  printf '[swift-hash]\nswift_hash_path_prefix = diskhub-test\nswift_hash_path_suffix = diskhub-test\n' > /etc/swift/swift.conf
fi

common() {
  cat <<CONF
[DEFAULT]
bind_ip = 127.0.0.1
bind_port = $1
workers = 1
user = $(id -un)
swift_dir = $dir
devices = $dir/srv
mount_check = false
log_level = WARNING
CONF
}

# One ring per server type: 2^8 partitions, one replica, one device on that server's port.
n=1
for server in account container object; do
  server_port=$((port + n)); n=$((n + 1))
  {
    common "$server_port"
    printf '\n[pipeline:main]\npipeline = healthcheck %s-server\n' "$server"
    printf '\n[app:%s-server]\nuse = egg:swift#%s\n' "$server" "$server"
    printf '\n[filter:healthcheck]\nuse = egg:swift#healthcheck\n'
  } > "$dir/$server-server.conf"
  ( cd "$dir"
    swift-ring-builder "$server.builder" create 8 1 0 >/dev/null
    swift-ring-builder "$server.builder" add "r1z1-127.0.0.1:$server_port/disk1" 100 >/dev/null
    swift-ring-builder "$server.builder" rebalance >/dev/null || true )
done
memcached_port=$((port + 4))

# The proxy: s3api before tempauth (it turns S3 signatures into a tempauth check), slo for
# static large objects (the Swift store's large images; s3api's multipart uploads too).
{
  common "$port"
  cat <<CONF

[pipeline:main]
pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats s3api tempauth copy slo dlo proxy-logging proxy-server

[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true

[filter:s3api]
use = egg:swift#s3api
location = us-east-1

[filter:tempauth]
use = egg:swift#tempauth
user_test_tester = testing .admin

[filter:cache]
use = egg:swift#memcache
memcache_servers = 127.0.0.1:$memcached_port

[filter:catch_errors]
use = egg:swift#catch_errors

[filter:gatekeeper]
use = egg:swift#gatekeeper

[filter:healthcheck]
use = egg:swift#healthcheck

[filter:proxy-logging]
use = egg:swift#proxy_logging

[filter:listing_formats]
use = egg:swift#listing_formats

[filter:copy]
use = egg:swift#copy

[filter:slo]
use = egg:swift#slo

[filter:dlo]
use = egg:swift#dlo
CONF
} > "$dir/proxy-server.conf"

# Each server in a session of its own so that this script's exit does not take it down.
setsid memcached -u "$(id -un)" -l 127.0.0.1 -p "$memcached_port" -m 64 </dev/null >"$dir/log/memcached.log" 2>&1 &
echo $! >> "$dir/pids"
for server in account container object proxy; do
  setsid "swift-$server-server" "$dir/$server-server.conf" </dev/null >"$dir/log/$server.log" 2>&1 &
  echo $! >> "$dir/pids"
done

for _ in $(seq 1 120); do
  if ready; then echo "swift on 127.0.0.1:$port (Swift: $auth test:tester/testing; S3: http://127.0.0.1:$port)"; exit 0; fi
  sleep 0.5
done
echo "swift did not become ready on 127.0.0.1:$port; logs in $dir/log:" >&2
tail -n 20 "$dir"/log/*.log >&2 || true
exit 1
