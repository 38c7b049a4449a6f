#!/usr/bin/env bash
# stripe-mock (Stripe's own API mock) for the local stack.
# Usage: stripe-mock.sh install | start STATE_DIR | stop STATE_DIR | status STATE_DIR
# shellcheck source=../lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

STRIPE_MOCK_VERSION=v0.203.0
STRIPE_MOCK_HOME="$HERD_CACHE_DIR/bin/stripe-mock-$STRIPE_MOCK_VERSION"
STRIPE_MOCK_BIN="$STRIPE_MOCK_HOME/stripe-mock"

install() {
  [[ -x "$STRIPE_MOCK_BIN" ]] && return 0
  cache_lock stripe-mock
  [[ -x "$STRIPE_MOCK_BIN" ]] && return 0
  command -v go >/dev/null || die "go not found: install a Go toolchain first"
  log "building stripe-mock $STRIPE_MOCK_VERSION"
  # Under the lock no other build runs: temp dirs left here are from
  # interrupted builds.
  rm -rf "$HERD_CACHE_DIR/bin/.stripe-mock-$STRIPE_MOCK_VERSION."*
  local tmp
  tmp="$(mktemp -d "$HERD_CACHE_DIR/bin/.stripe-mock-$STRIPE_MOCK_VERSION.XXXXXX")"
  chmod 755 "$tmp"
  if ! GOBIN="$tmp" go install "github.com/stripe/stripe-mock@$STRIPE_MOCK_VERSION" >&2; then
    rm -rf "$tmp"
    die "go install stripe-mock $STRIPE_MOCK_VERSION failed"
  fi
  mv -T "$tmp" "$STRIPE_MOCK_HOME"
  log "stripe-mock installed in $STRIPE_MOCK_HOME"
}

start() {
  STATE="$(cd "$1" && pwd)"
  PORT="${HERD_PORT_STRIPE_MOCK:-12111}"
  if ! daemon_running "$STATE" stripe-mock; then
    [[ -x "$STRIPE_MOCK_BIN" ]] || die "stripe-mock $STRIPE_MOCK_VERSION is not installed: run '$0 install'"
    ensure_port_free stripe-mock "$PORT"
    # HTTP on loopback only. Naming an HTTP address alone would still open the
    # HTTPS listener on its fixed default port (12112), so it gets a port the
    # kernel picks: several stacks can run side by side.
    # Run inside the state dir: its command line does not name the dir, its
    # working directory does, which is how `stack.sh down` finds leftovers.
    start_daemon "$STATE" stripe-mock env -C "$STATE" "$STRIPE_MOCK_BIN" \
      -http-addr "127.0.0.1:$PORT" -https-addr 127.0.0.1:0
    wait_for_daemon "$STATE" stripe-mock "stripe-mock not answering" \
      curl -fsS --max-time 2 -u sk_test_123: "http://127.0.0.1:$PORT/v1/customers?limit=1"
    log "stripe-mock ready on 127.0.0.1:$PORT"
  fi
  write_env_file "$STATE" stripe-mock <<ENV
export HERD_STRIPE_API_BASE=http://127.0.0.1:$PORT
export HERD_STRIPE_SECRET_KEY=sk_test_123
ENV
}

stop() {
  STATE="$(cd "$1" && pwd)"
  stop_daemon "$STATE" stripe-mock
  rm -f "$STATE/env.d/stripe-mock.env"
}

status() {
  STATE="$(cd "$1" && pwd)"
  PORT="${HERD_PORT_STRIPE_MOCK:-12111}"
  daemon_running "$STATE" stripe-mock && curl -fsS --max-time 2 -u sk_test_123: "http://127.0.0.1:$PORT/v1/customers?limit=1" >/dev/null
}

component_main "$@"
