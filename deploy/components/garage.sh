#!/usr/bin/env bash
# Garage (S3-compatible object storage), single node, for the local stack.
# Usage: garage.sh install | start STATE_DIR | stop STATE_DIR | status STATE_DIR
# shellcheck source=../lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

GARAGE_VERSION=2.5.0
GARAGE_HOME="$HERD_CACHE_DIR/bin/garage-$GARAGE_VERSION"
GARAGE_BIN="$GARAGE_HOME/bin/garage"

install() {
  [[ -x "$GARAGE_BIN" ]] && return 0
  cache_lock garage
  [[ -x "$GARAGE_BIN" ]] && return 0
  command -v cargo >/dev/null || die "cargo not found: install a Rust toolchain (rustup) first"
  log "building garage $GARAGE_VERSION (several minutes on a cold cache)"
  # Under the lock no other build runs: temp dirs left here are from
  # interrupted builds.
  rm -rf "$HERD_CACHE_DIR/bin/.garage-$GARAGE_VERSION."*
  local tmp
  tmp="$(mktemp -d "$HERD_CACHE_DIR/bin/.garage-$GARAGE_VERSION.XXXXXX")"
  chmod 755 "$tmp"
  # Keep the target dir in the cache: an interrupted build resumes where it stopped.
  if ! CARGO_TARGET_DIR="$HERD_CACHE_DIR/cargo-target/garage-$GARAGE_VERSION" \
      cargo install garage --version "$GARAGE_VERSION" --locked --root "$tmp" >&2; then
    rm -rf "$tmp"
    die "cargo install garage $GARAGE_VERSION failed"
  fi
  mv -T "$tmp" "$GARAGE_HOME"
  # The build tree (close to 1 GB) only served this version.
  rm -rf "$HERD_CACHE_DIR/cargo-target/garage-$GARAGE_VERSION"
  log "garage installed in $GARAGE_HOME"
}

paths() {
  STATE="$(cd "$1" && pwd)"
  S3_PORT="${HERD_PORT_GARAGE_S3:-13900}"
  RPC_PORT="${HERD_PORT_GARAGE_RPC:-13901}"
  ADMIN_PORT="${HERD_PORT_GARAGE_ADMIN:-13903}"
  GARAGE_DIR="$STATE/garage"
  GARAGE_CONF="$GARAGE_DIR/garage.toml"
}

write_env() {
  write_env_file "$STATE" garage <<ENV
export HERD_S3_ENDPOINT=http://127.0.0.1:$S3_PORT
export HERD_S3_REGION=garage
export HERD_GARAGE_ADMIN_URL=http://127.0.0.1:$ADMIN_PORT
export HERD_GARAGE_ADMIN_TOKEN=$(state_secret "$STATE" garage-admin-token)
ENV
}

# admin_get PATH: GET an admin API v2 endpoint, print the body.
admin_get() {
  curl -fsS --max-time 5 -H "Authorization: Bearer $(state_secret "$STATE" garage-admin-token)" \
    "http://127.0.0.1:$ADMIN_PORT$1"
}

# The configuration is rewritten on every cold start so that changed ports
# apply; the secrets stay those of the state dir. No web endpoint: the stack
# serves media through the S3 API only.
write_config() {
  mkdir -p "$GARAGE_DIR/meta" "$GARAGE_DIR/data"
  (umask 077 && cat >"$GARAGE_CONF.tmp") <<CONF
metadata_dir = "$GARAGE_DIR/meta"
data_dir = "$GARAGE_DIR/data"
db_engine = "sqlite"
replication_factor = 1
metadata_fsync = false
data_fsync = false
rpc_bind_addr = "127.0.0.1:$RPC_PORT"
rpc_public_addr = "127.0.0.1:$RPC_PORT"
rpc_secret = "$(state_secret "$STATE" garage-rpc-secret)"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$S3_PORT"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:$ADMIN_PORT"
admin_token = "$(state_secret "$STATE" garage-admin-token)"
CONF
  mv -f "$GARAGE_CONF.tmp" "$GARAGE_CONF"
}

layout_version() {
  admin_get /v2/GetClusterLayout | python3 -c 'import json,sys; print(json.load(sys.stdin)["version"])'
}

# The single-node layout is assigned and applied once, when the cluster has none.
ensure_layout() {
  local version node
  version="$(layout_version)" || die "cannot read the cluster layout from the admin API"
  [[ "$version" == 0 ]] || return 0
  node="$("$GARAGE_BIN" -c "$GARAGE_CONF" node id -q 2>/dev/null)" || die "garage node id failed"
  node="${node%%@*}"
  log "garage: assigning single-node layout to node ${node:0:16}"
  "$GARAGE_BIN" -c "$GARAGE_CONF" layout assign -z dc1 -c 1G "$node" >/dev/null
  "$GARAGE_BIN" -c "$GARAGE_CONF" layout apply --version 1 >/dev/null
}

cluster_healthy() {
  admin_get /v2/GetClusterHealth | python3 -c 'import json,sys; sys.exit(json.load(sys.stdin)["status"] != "healthy")'
}

start() {
  paths "$1"
  if daemon_running "$STATE" garage; then
    write_env
    return 0
  fi
  [[ -x "$GARAGE_BIN" ]] || die "garage $GARAGE_VERSION is not installed: run '$0 install'"
  ensure_port_free "garage S3 API" "$S3_PORT"
  ensure_port_free "garage RPC" "$RPC_PORT"
  ensure_port_free "garage admin API" "$ADMIN_PORT"
  write_config
  start_daemon "$STATE" garage env NO_COLOR=1 RUST_LOG="${RUST_LOG:-garage=info}" "$GARAGE_BIN" -c "$GARAGE_CONF" server
  wait_for_daemon "$STATE" garage "garage admin API not answering" admin_get /v2/GetClusterHealth
  ensure_layout
  local i
  for ((i = 0; i < 150; i++)); do
    cluster_healthy 2>/dev/null && break
    sleep 0.2
  done
  cluster_healthy || die "garage cluster not healthy after 30s; see $STATE/logs/garage.log"
  write_env
  log "garage ready: S3 on 127.0.0.1:$S3_PORT, admin on 127.0.0.1:$ADMIN_PORT"
}

stop() {
  paths "$1"
  stop_daemon "$STATE" garage
  rm -f "$STATE/env.d/garage.env"
}

status() {
  paths "$1"
  daemon_running "$STATE" garage && cluster_healthy
}

component_main "$@"
