#!/usr/bin/env bash
# PostgreSQL 15 (Debian packages): two throwaway clusters of their own per state
# dir. The first holds Herd's database; both take tenants, so that instances
# can be placed on, and moved to, another database server.
# Usage: postgres.sh install | start STATE_DIR | stop STATE_DIR | status STATE_DIR
# shellcheck source=../lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

PG_MAJOR=15
PG_BIN="/usr/lib/postgresql/$PG_MAJOR/bin"
# The servers, by daemon name; each has a directory of that name in the state dir.
SERVERS=(postgres postgres2)

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
}

# server NAME: point PORT, PG_DIR, PG_DATA and PG_SOCK at server NAME.
server() {
  NAME="$1"
  case "$NAME" in
    postgres) PORT="${HERD_PORT_POSTGRES:-15432}" ;;
    postgres2) PORT="${HERD_PORT_POSTGRES2:-15433}" ;;
    *) die "no PostgreSQL server named $NAME" ;;
  esac
  PG_DIR="$STATE/$NAME"
  PG_DATA="$PG_DIR/data"
  PG_SOCK="$PG_DIR/run"
}

superuser_password() { state_secret "$STATE" "$NAME-superuser-password"; }

admin_url() {
  server "$1"
  printf 'postgres://postgres:%s@127.0.0.1:%s/postgres' "$(superuser_password)" "$PORT"
}

write_env() {
  local herd_pw pg_url pg2_url
  pg_url="$(admin_url postgres)"
  pg2_url="$(admin_url postgres2)"
  herd_pw="$(state_secret "$STATE" postgres-herd-password)"
  server postgres
  write_env_file "$STATE" postgres <<ENV
export DATABASE_URL=postgres://herd:$herd_pw@127.0.0.1:$PORT/herd
export HERD_PG_ADMIN_URL=$pg_url
export HERD_PG2_ADMIN_URL=$pg2_url
ENV
}

# prepare_dir: PG_DIR and its socket directory, owned by the postgres OS user,
# which must be able to reach them inside the state dir.
prepare_dir() {
  chmod a+x "$STATE"
  command install -d -o postgres -g postgres -m 700 "$PG_DIR" "$PG_SOCK"
  as_pg test -w "$PG_DIR" && return 0
  # The first directory from the root down that the postgres user cannot enter.
  local d="" part
  local -a parts
  IFS=/ read -ra parts <<<"${PG_DIR#/}"
  for part in "${parts[@]}"; do
    d="$d/$part"
    as_pg test -x "$d" || break
  done
  die "the postgres OS user cannot reach $PG_DIR ($d is not searchable for it): 'chmod o+x $d', or use a state dir elsewhere (deploy/stack.sh up --state-dir DIR)"
}

# init_clusters: a data directory for every server that has none. initdb runs
# once; the other servers get a copy of its result, which takes a tenth of the
# time. A copy starts with the first server's superuser password, which start
# replaces with its own before writing the env.
init_clusters() {
  local name missing=()
  for name in "${SERVERS[@]}"; do
    server "$name"
    [[ -f "$PG_DATA/PG_VERSION" ]] || missing+=("$name")
  done
  [[ ${#missing[@]} -gt 0 ]] || return 0
  id postgres >/dev/null 2>&1 || die "no postgres OS user: run '$0 install' first"
  server "${missing[0]}"
  prepare_dir
  local su_pw pwfile="$PG_DIR/initdb.pw" template="$PG_DIR/data.init" first_data="$PG_DATA"
  su_pw="$(superuser_password)"
  rm -rf "$template"
  (umask 077 && printf '%s\n' "$su_pw" >"$pwfile")
  chown postgres:postgres "$pwfile"
  log "creating a PostgreSQL $PG_MAJOR cluster in $PG_DATA"
  if ! as_pg "$PG_BIN/initdb" -D "$template" -U postgres --pwfile="$pwfile" \
      --auth-local=peer --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 --no-sync >"$PG_DIR/initdb.log" 2>&1; then
    rm -f "$pwfile"
    cat "$PG_DIR/initdb.log" >&2
    die "initdb failed"
  fi
  rm -f "$pwfile"
  # Throwaway cluster: durability off, enough connections for tests that
  # create tenant databases. Port, address and socket are given on the command line.
  cat >>"$template/postgresql.conf" <<'CONF'

# herd local stack
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
password_encryption = scram-sha-256
CONF
  # Only once renamed does a directory become a cluster: an interrupted
  # initdb or copy is redone. The template goes into place last, as the copies
  # are made from it.
  for name in "${missing[@]:1}"; do
    server "$name"
    prepare_dir
    log "creating a PostgreSQL $PG_MAJOR cluster in $PG_DATA"
    rm -rf "$PG_DIR/data.init"
    cp -a "$template" "$PG_DIR/data.init"
    mv -T "$PG_DIR/data.init" "$PG_DATA"
  done
  mv -T "$template" "$first_data"
}

launch() {
  command install -d -o postgres -g postgres -m 700 "$PG_SOCK"
  rm -f "$PG_DATA/postmaster.pid"   # stale after a crash; our pidfile says nothing runs
  # setpriv execs the postmaster directly, so the pidfile holds its pid.
  start_daemon "$STATE" "$NAME" setpriv --reuid=postgres --regid=postgres --init-groups -- \
    "$PG_BIN/postgres" -D "$PG_DATA" -p "$PORT" -h 127.0.0.1 -k "$PG_SOCK"
}

# configure: idempotent, so run on every cold start: the superuser's password
# and, on the first server, Herd's role and database. The passwords go through
# stdin, never the command line.
configure() {
  local su_pw herd_pw
  su_pw="$(superuser_password)"
  {
    echo "ALTER ROLE postgres PASSWORD '$su_pw';"
    if [[ "$NAME" == postgres ]]; then
      herd_pw="$(state_secret "$STATE" postgres-herd-password)"
      cat <<SQL
SELECT 'CREATE ROLE herd LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'herd')\gexec
ALTER ROLE herd LOGIN PASSWORD '$herd_pw';
SELECT 'CREATE DATABASE herd OWNER herd' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'herd')\gexec
SQL
    fi
  } | as_pg psql -X -q -h "$PG_SOCK" -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 >/dev/null
}

start() {
  paths "$1"
  local name starting=()
  for name in "${SERVERS[@]}"; do
    daemon_running "$STATE" "$name" || starting+=("$name")
  done
  if [[ ${#starting[@]} -gt 0 ]]; then
    [[ -x "$PG_BIN/postgres" ]] || die "PostgreSQL $PG_MAJOR is not installed: run '$0 install'"
    for name in "${starting[@]}"; do
      server "$name"
      ensure_port_free "$name" "$PORT"
    done
    init_clusters
    # Launched side by side, then waited for: the servers start in parallel.
    for name in "${starting[@]}"; do
      server "$name"
      launch
    done
    for name in "${starting[@]}"; do
      server "$name"
      wait_for_daemon "$STATE" "$NAME" "$NAME not ready" as_pg "$PG_BIN/pg_isready" -q -h "$PG_SOCK" -p "$PORT"
      configure
      log "$NAME ready on 127.0.0.1:$PORT"
    done
  fi
  write_env
}

stop() {
  paths "$1"
  local name
  for name in "${SERVERS[@]}"; do
    if daemon_running "$STATE" "$name"; then
      # Fast shutdown: SIGTERM alone would wait for every client to disconnect.
      kill -INT "$(cat "$STATE/pids/$name.pid")" 2>/dev/null || true
    fi
  done
  for name in "${SERVERS[@]}"; do
    stop_daemon "$STATE" "$name"
  done
  rm -f "$STATE/env.d/postgres.env"
}

status() {
  paths "$1"
  local name
  for name in "${SERVERS[@]}"; do
    server "$name"
    daemon_running "$STATE" "$name" || return 1
    as_pg "$PG_BIN/pg_isready" -q -h "$PG_SOCK" -p "$PORT" || return 1
  done
}

component_main "$@"
