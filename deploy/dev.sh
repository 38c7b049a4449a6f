#!/usr/bin/env bash
# The local development stack with Herd running against it.
#
#   deploy/dev.sh [up]   install what is missing, start the stack and Herd, print the URL
#   deploy/dev.sh down   stop Herd and the whole stack; no process is left behind
#   deploy/dev.sh status what runs
#   deploy/dev.sh logs   follow Herd's log
#
# State (data, logs, generated secrets) lives in .herd/ at the repository
# root; `rm -rf .herd` after `down` starts from scratch.
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
cd "$HERD_REPO_ROOT"

STATE="$HERD_REPO_ROOT/.herd"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HERD_CACHE_DIR/target}"

up() {
  bash deploy/stack.sh up --state-dir "$STATE"
  # shellcheck disable=SC1091
  source "$STATE/env"

  log "building herd"
  cargo build --locked --bin herd
  local herd="$CARGO_TARGET_DIR/debug/herd"

  if daemon_running "$STATE" herd; then
    log "restarting herd with the fresh build"
    stop_daemon "$STATE" herd
  fi
  start_daemon "$STATE" herd "$herd" serve
  local url="http://$HERD_LISTEN_ADDR"
  local i
  for ((i = 0; i < 600; i++)); do
    curl -fsS -o /dev/null "$url/readyz" 2>/dev/null && break
    daemon_running "$STATE" herd || break
    sleep 0.2
  done
  if ! curl -fsS -o /dev/null "$url/readyz" 2>/dev/null; then
    tail -n 30 "$STATE/logs/herd.log" >&2
    die "herd did not become ready at $url (log: $STATE/logs/herd.log)"
  fi

  cat <<MSG

Herd is running at $url
  health:     curl $url/healthz
  readiness:  curl $url/readyz
  log in:     the API is open on 127.0.0.1 for now; accounts and API tokens
              come with the data model (see docs/architecture.md)
  cluster:    export KUBECONFIG=$KUBECONFIG; kubectl get nodes
  settings:   source $STATE/env
  logs:       deploy/dev.sh logs
  stop:       deploy/dev.sh down
MSG
}

down() {
  stop_daemon "$STATE" herd
  bash deploy/stack.sh down --state-dir "$STATE"
}

case "${1:-up}" in
  up) up ;;
  down) down ;;
  status)
    daemon_running "$STATE" herd && log "herd: running" || log "herd: stopped"
    bash deploy/stack.sh status --state-dir "$STATE"
    ;;
  logs) exec tail -F "$STATE/logs/herd.log" ;;
  *) sed -n '2,10p' "${BASH_SOURCE[0]}" >&2; exit 2 ;;
esac
