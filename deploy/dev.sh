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
  set_up_installation "$herd"

  if daemon_running "$STATE" herd; then
    log "restarting herd with the fresh build"
    stop_daemon "$STATE" herd
  fi
  # Everything of the dev stack is on loopback, exported archives included.
  HERD_IMPORT_FROM_PRIVATE_ADDRESSES=true HERD_SCRATCH_DIR="$STATE/scratch" \
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

  local operator customer
  operator="$(cat "$STATE/secrets/demo-operator-token")"
  customer="$(cat "$STATE/secrets/demo-customer-token")"
  cat <<MSG

Herd is running at $url
  log in (API tokens, sent as "Authorization: Bearer <token>"):
    operator@herd.localhost  $operator
    customer@herd.localhost  $customer
  try:        curl -H "Authorization: Bearer $customer" $url/api/v1/plans
  order:      curl -H "Authorization: Bearer $customer" -H 'Content-Type: application/json' \\
                -d '{"domain":"demo.example.social","plan":"small","owner_email":"you@example.org"}' \\
                $url/api/v1/instances
  API docs:   $url/openapi.json and docs/api.md
  health:     curl $url/healthz; curl $url/readyz
  cluster:    export KUBECONFIG=$KUBECONFIG; kubectl get nodes,mastodoninstances
  settings:   source $STATE/env
  logs:       deploy/dev.sh logs
  stop:       deploy/dev.sh down
MSG
}

# First start: the schema, the plans, the local cluster, database server and
# object store as the fleet, and demo tokens. Every step is idempotent.
set_up_installation() {
  local herd="$1" port
  "$herd" migrate
  "$herd" seed
  "$herd" fleet add-cluster --name local --region local --kubeconfig "$KUBECONFIG" >/dev/null
  port="${HERD_PG_ADMIN_URL##*:}"
  port="${port%%/*}"
  HERD_FLEET_ADMIN_URL="$HERD_PG_ADMIN_URL" "$herd" fleet add-database-server \
    --name local --region local --tenant-host 127.0.0.1 --tenant-port "$port" >/dev/null
  HERD_FLEET_ADMIN_TOKEN="$HERD_GARAGE_ADMIN_TOKEN" "$herd" fleet add-object-store \
    --name local --region local --s3-endpoint "$HERD_S3_ENDPOINT" --s3-region "$HERD_S3_REGION" \
    --admin-endpoint "$HERD_GARAGE_ADMIN_URL" >/dev/null
  demo_token "$herd" operator operator@herd.localhost
  demo_token "$herd" customer customer@herd.localhost
}

# demo_token HERD ROLE EMAIL: a token for the demo account, created once and
# kept in the state dir (tokens are stored hashed, so this is the only copy).
demo_token() {
  local herd="$1" role="$2" email="$3" file="$STATE/secrets/demo-$2-token"
  if [[ ! -s "$file" ]]; then
    mkdir -p "$STATE/secrets"
    (umask 077 && "$herd" token create --email "$email" --role "$role" --name demo >"$file.tmp" && mv -f "$file.tmp" "$file")
  fi
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
