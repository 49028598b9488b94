#!/usr/bin/env bash
# MariaDB for the image service's database tests: listening on 127.0.0.1:3306 only, with a
# user `diskhub` (password `diskhub`) that owns the databases `diskhub_test` and
# `diskhub_t_*` (each test makes its own). Safe to run again.
set -euo pipefail
command -v mariadbd >/dev/null || command -v mysqld >/dev/null || { echo "mariadb-server is not installed (see .ci/apt-packages.txt)" >&2; exit 1; }
cat > /etc/mysql/mariadb.conf.d/90-diskhub.cnf <<'CNF'
[mysqld]
bind-address = 127.0.0.1
port = 3306
CNF
if ! mariadb-admin ping >/dev/null 2>&1; then
  install -d -o mysql -g mysql /run/mysqld
  [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql >/dev/null
  setsid mysqld_safe >/dev/null 2>&1 < /dev/null &
  for _ in $(seq 1 60); do
    mariadb-admin ping >/dev/null 2>&1 && break
    sleep 0.5
  done
fi
mariadb <<'SQL'
CREATE DATABASE IF NOT EXISTS diskhub_test CHARACTER SET utf8mb4;
CREATE USER IF NOT EXISTS 'diskhub'@'127.0.0.1' IDENTIFIED BY 'diskhub';
CREATE USER IF NOT EXISTS 'diskhub'@'localhost' IDENTIFIED BY 'diskhub';
GRANT ALL PRIVILEGES ON `diskhub\_%`.* TO 'diskhub'@'127.0.0.1';
GRANT ALL PRIVILEGES ON `diskhub\_%`.* TO 'diskhub'@'localhost';
FLUSH PRIVILEGES;
SQL
echo "mariadb on 127.0.0.1:3306 (mysql://diskhub:diskhub@127.0.0.1:3306/diskhub_test)"
