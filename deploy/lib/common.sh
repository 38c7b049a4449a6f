# Shared helpers for the local stack scripts. Sourced, never executed.
# shellcheck shell=bash

set -euo pipefail

HERD_REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# Built components and Cargo's target directory live outside the clone so that
# a fresh clone reuses them and `git clean` never throws them away.
HERD_CACHE_DIR="${HERD_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/herd}"
export HERD_REPO_ROOT HERD_CACHE_DIR

log() { printf '[herd-stack] %s\n' "$*" >&2; }
die() { printf '[herd-stack] error: %s\n' "$*" >&2; exit 1; }

# Ask the kernel for a port that is free right now.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# wait_for_tcp HOST PORT SECONDS
wait_for_tcp() {
  local host="$1" port="$2" seconds="${3:-60}" i
  for ((i = 0; i < seconds * 10; i++)); do
    if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  return 1
}

# wait_for SECONDS DESCRIPTION COMMAND...: retry COMMAND until it succeeds.
wait_for() {
  local seconds="$1" what="$2" i
  shift 2
  for ((i = 0; i < seconds * 5; i++)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  die "timed out after ${seconds}s waiting for $what"
}

# wait_for_daemon STATE_DIR NAME FAILURE COMMAND...: retry COMMAND for up to 60s
# while daemon NAME starts, giving up at once if NAME exits; FAILURE says what
# went wrong when time runs out.
wait_for_daemon() {
  local state="$1" name="$2" failure="$3" i
  shift 3
  for ((i = 0; i < 300; i++)); do
    if ! daemon_running "$state" "$name"; then
      die "$name exited during start-up; see $state/logs/$name.log"
    fi
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  "$@" >/dev/null || die "$failure after 60s; see $state/logs/$name.log"
}

# start_daemon STATE_DIR NAME COMMAND...: run COMMAND in the background with its
# output in STATE_DIR/logs/NAME.log and its pid in STATE_DIR/pids/NAME.pid.
# setsid puts it in a session of its own so that stopping the stack can kill
# the whole process group and leave nothing behind.
start_daemon() {
  local state="$1" name="$2"
  shift 2
  mkdir -p "$state/logs" "$state/pids"
  setsid "$@" >>"$state/logs/$name.log" 2>&1 < /dev/null &
  echo $! >"$state/pids/$name.pid"
}

# daemon_running STATE_DIR NAME
daemon_running() {
  local pidfile="$1/pids/$2.pid"
  [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

# stop_daemon STATE_DIR NAME: TERM the process group, KILL it after a grace period.
stop_daemon() {
  local pidfile="$1/pids/$2.pid" pid i
  [[ -f "$pidfile" ]] || return 0
  pid="$(cat "$pidfile")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

# cache_lock NAME: hold an exclusive lock on $HERD_CACHE_DIR/locks/NAME.lock until
# the calling shell exits, so that concurrent installs of one component wait for
# each other instead of building twice.
cache_lock() {
  local fd
  mkdir -p "$HERD_CACHE_DIR/locks" "$HERD_CACHE_DIR/bin"
  exec {fd}>"$HERD_CACHE_DIR/locks/$1.lock"
  flock "$fd"
}

# state_secret STATE_DIR NAME: print the secret STATE_DIR/secrets/NAME, creating
# it (32 random bytes as 64 hex characters, mode 600) the first time.
state_secret() {
  local dir="$1/secrets" file="$1/secrets/$2"
  if [[ ! -s "$file" ]]; then
    mkdir -p "$dir"
    chmod 700 "$dir"
    (umask 077 && od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >"$file.tmp" && mv -f "$file.tmp" "$file")
  fi
  cat "$file"
}

# write_env_file STATE_DIR NAME: write stdin to STATE_DIR/env.d/NAME.env (mode
# 600, it may hold secrets), replacing any previous file in one rename.
write_env_file() {
  local dir="$1/env.d"
  mkdir -p "$dir"
  (umask 077 && cat >"$dir/$2.env.tmp")
  mv -f "$dir/$2.env.tmp" "$dir/$2.env"
}

# log_tail STATE_DIR NAME [LINES]: print the end of a daemon's log to stderr.
log_tail() {
  local file="$1/logs/$2.log"
  [[ -f "$file" ]] || return 0
  printf '[herd-stack] ---- last lines of %s ----\n' "$file" >&2
  tail -n "${3:-40}" "$file" >&2
}

# ensure_port_free WHAT PORT: fail clearly when something already accepts
# connections on 127.0.0.1:PORT (some servers, Garage among them, would start
# anyway and share the port with the intruder).
ensure_port_free() {
  if (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null; then
    die "$1: port $2 on 127.0.0.1 is already in use by another process (choose other HERD_PORT_* values, or deploy/stack.sh up --free-ports)"
  fi
}

# component_main ARGS...: the command line of a component script, run with the
# install, start, stop and status functions that script defines.
component_main() {
  case "${1:-}" in
    install) install ;;
    start) [[ $# -eq 2 ]] || die "usage: $0 start STATE_DIR"; start "$2" ;;
    stop) [[ $# -eq 2 ]] || die "usage: $0 stop STATE_DIR"; if [[ -d "$2" ]]; then stop "$2"; fi ;;
    status) [[ $# -eq 2 ]] || die "usage: $0 status STATE_DIR"; status "$2" ;;
    *) die "usage: $0 install | start STATE_DIR | stop STATE_DIR | status STATE_DIR" ;;
  esac
}
