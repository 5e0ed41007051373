#!/usr/bin/env bash
# Throwaway PostgreSQL server for tests.
#   postgres.sh start DIR PORT   # initdb in DIR, listen on 127.0.0.1:PORT, socket in DIR/sock,
#                                # role tap/tap owning db "warehouse"; returns once it accepts connections
#   postgres.sh stop DIR         # pg_ctl stop -m fast, then remove DIR
# Needs Debian's `postgresql` package (apt-get install -y postgresql); installs nothing itself.
# initdb/pg_ctl refuse to run as root, so they run as the `postgres` user via runuser when we are root.
set -euo pipefail

die() { echo "postgres.sh: $*" >&2; exit 1; }

pg_bin() {
  local d
  if [ -n "${PG_BIN:-}" ]; then echo "$PG_BIN"; return; fi
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$d" ] && [ -x "$d/initdb" ] || die "no PostgreSQL binaries under /usr/lib/postgresql/*/bin (apt-get install -y postgresql)"
  echo "$d"
}

as_pg() {  # run a command as the postgres OS user when root, else as ourselves
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# A server for DIR answers on its socket (port read from postgresql.conf)?
answering() {
  local port
  port=$(sed -n 's/^port = \([0-9]*\).*/\1/p' "$1/data/postgresql.conf" 2>/dev/null | tail -n 1)
  [ -n "$port" ] && as_pg "$(pg_bin)/pg_isready" -h "$1/sock" -p "$port" -t 2 -q
}

# Drop a postmaster.pid left by a dead (or zombie) postmaster, e.g. after kill -9 or a reboot.
clear_stale_pid() {
  local pidfile=$1/data/postmaster.pid pid st
  [ -f "$pidfile" ] || return 0
  pid=$(head -n 1 "$pidfile")
  st=$(ps -o stat= -p "$pid" 2>/dev/null || true)
  case "$st" in
    ''|Z*) rm -f "$pidfile" "$1"/sock/.s.PGSQL.*; sleep 0.3 ;;  # let orphaned backends notice and exit
    *) die "a server (pid $pid) owns $1/data but does not answer; run: postgres.sh stop $1" ;;
  esac
}

start() {
  local dir=${1:?usage: postgres.sh start DIR PORT} port=${2:?usage: postgres.sh start DIR PORT} bin
  bin=$(pg_bin)
  case "$port" in ''|*[!0-9]*) die "PORT must be a number, got '$port'";; esac
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  # unix socket paths are limited to 107 bytes
  [ ${#dir} -le 80 ] || die "DIR path too long for a unix socket (${#dir} > 80 chars): $dir"
  if [ "$(id -u)" = 0 ]; then
    chown postgres: "$dir"
    runuser -u postgres -- test -w "$dir" \
      || die "user postgres cannot reach $dir (a parent directory is not world-searchable); use e.g. /tmp/..."
  fi
  local cur_port
  cur_port=$(sed -n 's/^port = \([0-9]*\).*/\1/p' "$dir/data/postgresql.conf" 2>/dev/null | tail -n 1 || true)
  if [ -f "$dir/data/postmaster.pid" ] && answering "$dir" && [ "$cur_port" != "$port" ]; then
    as_pg "$bin/pg_ctl" -D "$dir/data" -m fast -w -t 30 stop >/dev/null  # restart on the new port
  fi
  if [ -f "$dir/data/postmaster.pid" ] && answering "$dir"; then
    :  # idempotent: already up on this dir and port; just make sure role/db exist
  else
    clear_stale_pid "$dir"
    [ -f "$dir/data/PG_VERSION" ] || {
      rm -rf "$dir/data" "$dir/sock"
      mkdir -p "$dir/data" "$dir/sock"
      if [ "$(id -u)" = 0 ]; then chown -R postgres: "$dir"; fi
      as_pg "$bin/initdb" -N -D "$dir/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
        || as_pg "$bin/initdb" -N -D "$dir/data" -U postgres -A trust -E UTF8 --locale=C >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; die "initdb failed"; }
      cat >>"$dir/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir/sock'
fsync = off
synchronous_commit = off
full_page_writes = off
CONF
      # password auth over TCP for the tap user; trust on the private socket
      cat >"$dir/data/pg_hba.conf" <<HBA
local all all trust
host  all all 127.0.0.1/32 scram-sha-256
HBA
    }
    # port may differ from a previous start of the same dir
    sed -i "s/^port = .*/port = $port/" "$dir/data/postgresql.conf"
    as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 -o "-p $port" start >/dev/null \
      || { tail -n 20 "$dir/server.log" >&2; die "server did not start (port $port in use?)"; }
  fi
  local psql=("$bin/psql" -h "$dir/sock" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 -qAtX)
  for _ in $(seq 1 50); do
    as_pg "$bin/pg_isready" -h "$dir/sock" -p "$port" -q && break
    sleep 0.1
  done
  as_pg "${psql[@]}" -c "DO \$\$BEGIN
      IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tap') THEN CREATE ROLE tap LOGIN PASSWORD 'tap';
      ELSE ALTER ROLE tap LOGIN PASSWORD 'tap'; END IF; END\$\$;" >/dev/null
  if [ -z "$(as_pg "${psql[@]}" -c "SELECT 1 FROM pg_database WHERE datname = 'warehouse'")" ]; then
    as_pg "${psql[@]}" -c "CREATE DATABASE warehouse OWNER tap" >/dev/null
  fi
}

stop() {
  local dir=${1:?usage: postgres.sh stop DIR}
  [ -d "$dir" ] || return 0
  if [ -f "$dir/data/postmaster.pid" ]; then
    as_pg "$(pg_bin)/pg_ctl" -D "$dir/data" -m fast -w -t 30 stop >/dev/null 2>&1 \
      || as_pg "$(pg_bin)/pg_ctl" -D "$dir/data" -m immediate -w -t 10 stop >/dev/null 2>&1 || true
  fi
  rm -rf "$dir"
}

case "${1:-}" in
  start) shift; start "$@" ;;
  stop) shift; stop "$@" ;;
  *) die "usage: postgres.sh start DIR PORT | stop DIR" ;;
esac
