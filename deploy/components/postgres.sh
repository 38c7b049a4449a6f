#!/usr/bin/env bash
# PostgreSQL 15 (Debian packages), a throwaway cluster of its own per state dir.
# Usage: postgres.sh install | start STATE_DIR | stop STATE_DIR | status STATE_DIR
# shellcheck source=../lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

PG_MAJOR=15
PG_BIN="/usr/lib/postgresql/$PG_MAJOR/bin"

as_root() {
  if [[ "$(id -u)" == 0 ]]; then "$@"; else sudo "$@"; fi
}

install() {
  if [[ -x "$PG_BIN/postgres" ]] && dpkg-query -W -f='${Status}' libpq-dev 2>/dev/null | grep -q 'install ok installed'; then
    return 0
  fi
  log "installing postgresql-$PG_MAJOR and libpq-dev from Debian"
  as_root apt-get update -qq >&2
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "postgresql-$PG_MAJOR" postgresql-client-$PG_MAJOR libpq-dev >&2
  [[ -x "$PG_BIN/postgres" ]] || die "postgresql-$PG_MAJOR did not install $PG_BIN/postgres"
}

# Everything below runs the server as the postgres OS user: initdb and the
# postmaster refuse to run as root.
as_pg() { runuser -u postgres -- "$@"; }

paths() {
  STATE="$(cd "$1" && pwd)"
  PORT="${HERD_PORT_POSTGRES:-15432}"
  PG_DIR="$STATE/postgres"
  PG_DATA="$PG_DIR/data"
  PG_SOCK="$PG_DIR/run"
}

write_env() {
  local su_pw herd_pw
  su_pw="$(state_secret "$STATE" postgres-superuser-password)"
  herd_pw="$(state_secret "$STATE" postgres-herd-password)"
  write_env_file "$STATE" postgres <<ENV
export DATABASE_URL=postgres://herd:$herd_pw@127.0.0.1:$PORT/herd
export HERD_PG_ADMIN_URL=postgres://postgres:$su_pw@127.0.0.1:$PORT/postgres
ENV
}

init_cluster() {
  [[ -f "$PG_DATA/PG_VERSION" ]] && return 0
  id postgres >/dev/null 2>&1 || die "no postgres OS user: run '$0 install' first"
  # The postgres user must be able to reach its directory inside the state dir.
  chmod a+x "$STATE"
  command install -d -o postgres -g postgres -m 700 "$PG_DIR" "$PG_SOCK"
  if ! as_pg test -w "$PG_DIR"; then
    # The first directory from the root down that the postgres user cannot enter.
    local d="" part
    local -a parts
    IFS=/ read -ra parts <<<"${PG_DIR#/}"
    for part in "${parts[@]}"; do
      d="$d/$part"
      as_pg test -x "$d" || break
    done
    die "the postgres OS user cannot reach $PG_DIR ($d is not searchable for it): 'chmod o+x $d', or use a state dir elsewhere (deploy/stack.sh up --state-dir DIR)"
  fi
  local su_pw pwfile="$PG_DIR/initdb.pw" tmpdata="$PG_DIR/data.init"
  su_pw="$(state_secret "$STATE" postgres-superuser-password)"
  rm -rf "$tmpdata"
  (umask 077 && printf '%s\n' "$su_pw" >"$pwfile")
  chown postgres:postgres "$pwfile"
  log "creating a PostgreSQL $PG_MAJOR cluster in $PG_DATA"
  if ! as_pg "$PG_BIN/initdb" -D "$tmpdata" -U postgres --pwfile="$pwfile" \
      --auth-local=peer --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 --no-sync >"$PG_DIR/initdb.log" 2>&1; then
    rm -f "$pwfile"
    cat "$PG_DIR/initdb.log" >&2
    die "initdb failed"
  fi
  rm -f "$pwfile"
  # Throwaway cluster: durability off, enough connections for tests that
  # create tenant databases. Port, address and socket are given on the command line.
  cat >>"$tmpdata/postgresql.conf" <<'CONF'

# herd local stack
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
password_encryption = scram-sha-256
CONF
  # Only now does the directory become a cluster: an interrupted initdb is redone.
  mv -T "$tmpdata" "$PG_DATA"
}

start() {
  paths "$1"
  if daemon_running "$STATE" postgres; then
    write_env
    return 0
  fi
  [[ -x "$PG_BIN/postgres" ]] || die "PostgreSQL $PG_MAJOR is not installed: run '$0 install'"
  ensure_port_free postgres "$PORT"
  init_cluster
  command install -d -o postgres -g postgres -m 700 "$PG_SOCK"
  rm -f "$PG_DATA/postmaster.pid"   # stale after a crash; our pidfile says nothing runs
  # setpriv execs the postmaster directly, so the pidfile holds its pid.
  start_daemon "$STATE" postgres setpriv --reuid=postgres --regid=postgres --init-groups -- \
    "$PG_BIN/postgres" -D "$PG_DATA" -p "$PORT" -h 127.0.0.1 -k "$PG_SOCK"
  wait_for_daemon "$STATE" postgres "postgres not ready" as_pg "$PG_BIN/pg_isready" -q -h "$PG_SOCK" -p "$PORT"
  local su_pw herd_pw
  su_pw="$(state_secret "$STATE" postgres-superuser-password)"
  herd_pw="$(state_secret "$STATE" postgres-herd-password)"
  # Idempotent: roles and database are (re)ensured on every cold start. The
  # passwords go through stdin, never the command line.
  as_pg psql -X -q -h "$PG_SOCK" -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 >/dev/null <<SQL
ALTER ROLE postgres PASSWORD '$su_pw';
SELECT 'CREATE ROLE herd LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'herd')\gexec
ALTER ROLE herd LOGIN PASSWORD '$herd_pw';
SELECT 'CREATE DATABASE herd OWNER herd' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'herd')\gexec
SQL
  write_env
  log "postgres ready on 127.0.0.1:$PORT"
}

stop() {
  paths "$1"
  if daemon_running "$STATE" postgres; then
    # Fast shutdown: SIGTERM alone would wait for every client to disconnect.
    kill -INT "$(cat "$STATE/pids/postgres.pid")" 2>/dev/null || true
  fi
  stop_daemon "$STATE" postgres
  rm -f "$STATE/env.d/postgres.env"
}

status() {
  paths "$1"
  daemon_running "$STATE" postgres && as_pg "$PG_BIN/pg_isready" -q -h "$PG_SOCK" -p "$PORT"
}

component_main "$@"
