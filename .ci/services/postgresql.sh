#!/usr/bin/env bash
# PostgreSQL for the image service's database tests: Debian's cluster, listening on
# 127.0.0.1:5432 only, with a role `diskhub` (password `diskhub`, may create databases; each
# test makes its own) and a database `diskhub_test`. Safe to run again.
set -euo pipefail
command -v pg_lsclusters >/dev/null || { echo "postgresql is not installed (see .ci/apt-packages.txt)" >&2; exit 1; }
ver=$(pg_lsclusters -h | awk 'NR==1{print $1}')
if [ -z "$ver" ]; then
  ver=$(ls /usr/lib/postgresql | sort -n | tail -1)
  pg_createcluster "$ver" main >/dev/null
fi
conf=/etc/postgresql/$ver/main/postgresql.conf
if ! grep -q "^listen_addresses = '127.0.0.1'" "$conf"; then
  echo "listen_addresses = '127.0.0.1'" >> "$conf"
fi
if ! pg_lsclusters -h | awk -v v="$ver" '$1==v && $2=="main"{print $4}' | grep -q online; then
  pg_ctlcluster "$ver" main start
fi
for _ in $(seq 1 30); do
  su postgres -c "psql -qAtc 'select 1'" >/dev/null 2>&1 && break
  sleep 0.5
done
su postgres -c "psql -qAt" >/dev/null <<'SQL'
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'diskhub') THEN
    CREATE ROLE diskhub LOGIN PASSWORD 'diskhub' CREATEDB;
  END IF;
END $$;
SQL
if ! su postgres -c "psql -qAtc \"select 1 from pg_database where datname='diskhub_test'\"" | grep -q 1; then
  su postgres -c "createdb -O diskhub diskhub_test"
fi
echo "postgresql $ver on 127.0.0.1:5432 (postgres://diskhub:diskhub@127.0.0.1:5432/diskhub_test)"
