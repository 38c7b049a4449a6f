#!/usr/bin/env bash
# A second Garage beside the first, so a move between clusters can also change
# the object store: garage.sh run again with a state of its own in
# STATE_DIR/garage-b and the HERD_PORT_B_GARAGE_* ports.
#
#   garage-b.sh install | start STATE_DIR | stop STATE_DIR | status STATE_DIR
#
# Ports (defaults for one developer stack):
#   HERD_PORT_B_GARAGE_S3 23900, HERD_PORT_B_GARAGE_RPC 23901,
#   HERD_PORT_B_GARAGE_ADMIN 23903
#
# start writes STATE_DIR/env.d/garage-b.env: the first Garage's variables with
# the suffix _2 (HERD_S3_ENDPOINT_2, HERD_GARAGE_ADMIN_URL_2, ...).
# shellcheck shell=bash

set -euo pipefail
# shellcheck source=../lib/common.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/../lib/common.sh"

GARAGE_SH="$HERD_REPO_ROOT/deploy/components/garage.sh"

# garage_b COMMAND STATE_DIR: garage.sh COMMAND on the second store's state and ports.
garage_b() {
  mkdir -p "$2/garage-b"
  env \
    HERD_PORT_GARAGE_S3="${HERD_PORT_B_GARAGE_S3:-23900}" \
    HERD_PORT_GARAGE_RPC="${HERD_PORT_B_GARAGE_RPC:-23901}" \
    HERD_PORT_GARAGE_ADMIN="${HERD_PORT_B_GARAGE_ADMIN:-23903}" \
    bash "$GARAGE_SH" "$1" "$2/garage-b"
}

install() { bash "$GARAGE_SH" install; }

start() {
  local state
  state="$(cd "$1" && pwd)"
  garage_b start "$state"
  sed -E 's/^export (HERD_[A-Z0-9_]+)=/export \1_2=/' "$state/garage-b/env.d/garage.env" |
    write_env_file "$state" garage-b
}

stop() {
  local state
  state="$(cd "$1" && pwd)"
  garage_b stop "$state"
  rm -f "$state/env.d/garage-b.env"
}

status() {
  local state
  state="$(cd "$1" && pwd)"
  garage_b status "$state"
}

component_main "$@"
