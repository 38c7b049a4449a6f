#!/usr/bin/env bash
# The local stack Herd develops and tests against: two PostgreSQL servers,
# Garage (S3), stripe-mock and two Kubernetes control planes with fake nodes
# (the second one for moves between clusters), all on 127.0.0.1, and the helm
# client the chart is tested with.
#
#   deploy/stack.sh install                                 build/install every component (cached)
#   deploy/stack.sh up     [--state-dir DIR] [--free-ports] install, start everything, write DIR/env
#   deploy/stack.sh down   [--state-dir DIR]                stop everything, leave no process behind
#   deploy/stack.sh status [--state-dir DIR]                show what runs; exit 0 when all is healthy
#   deploy/stack.sh env    [--state-dir DIR]                print the path of DIR/env
#
# DIR defaults to $HERD_REPO_ROOT/.herd with the default ports. --free-ports
# picks a free port for every HERD_PORT_* variable instead, so several stacks
# can run at once. The ports are kept in DIR/ports.env from the first `up` on.
# Use the stack with: source "$(deploy/stack.sh env)"
# HERD_STACK_SKIP="kube ..." leaves components out of install and up.
# shellcheck source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

COMPONENTS_DIR="$HERD_REPO_ROOT/deploy/components"
# Start order; stopped in reverse.
COMPONENTS=(postgres garage garage-b stripe-mock kube kube-b helm)

# Every port of the stack with its default. The kube defaults are those of
# deploy/components/kube.sh, the kube-b ones those of kube-b.sh, the garage-b
# ones those of garage-b.sh.
PORT_VARS=(
  HERD_PORT_POSTGRES=15432
  HERD_PORT_POSTGRES2=15433
  HERD_PORT_GARAGE_S3=13900
  HERD_PORT_GARAGE_RPC=13901
  HERD_PORT_GARAGE_WEB=13902
  HERD_PORT_GARAGE_ADMIN=13903
  HERD_PORT_B_GARAGE_S3=23900
  HERD_PORT_B_GARAGE_RPC=23901
  HERD_PORT_B_GARAGE_ADMIN=23903
  HERD_PORT_STRIPE_MOCK=12111
  HERD_PORT_ETCD=12379
  HERD_PORT_ETCD_PEER=12380
  HERD_PORT_KUBE_APISERVER=16443
  HERD_PORT_KUBE_CONTROLLER_MANAGER=10257
  HERD_PORT_KUBE_SCHEDULER=10259
  HERD_PORT_KWOK=10247
  HERD_PORT_B_ETCD=22379
  HERD_PORT_B_ETCD_PEER=22380
  HERD_PORT_B_KUBE_APISERVER=26443
  HERD_PORT_B_KUBE_CONTROLLER_MANAGER=20257
  HERD_PORT_B_KUBE_SCHEDULER=20259
  HERD_PORT_B_KWOK=20247
  HERD_PORT_HERD=8080
)

usage() {
  sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

component_script() { printf '%s/%s.sh' "$COMPONENTS_DIR" "$1"; }

# find_components: set PRESENT to the components whose script exists, in start order.
find_components() {
  local c
  PRESENT=()
  for c in "${COMPONENTS[@]}"; do
    if [[ " ${HERD_STACK_SKIP:-} " == *" $c "* ]]; then
      log "skipping $c (HERD_STACK_SKIP)"
    elif [[ -f "$(component_script "$c")" ]]; then
      PRESENT+=("$c")
    elif [[ "$c" == kube* ]]; then
      log "warning: deploy/components/$c.sh is missing: the stack runs WITHOUT that Kubernetes cluster"
    else
      die "deploy/components/$c.sh is missing"
    fi
  done
}

# ---------------------------------------------------------------- install ---

# The scripts' own needs, and the Redis server the autoscaling test starts
# for itself; a brand-new Debian may lack curl.
ensure_tools() {
  local missing=() t
  for t in curl python3 flock setsid setpriv runuser redis-server; do
    command -v "$t" >/dev/null || missing+=("$t")
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  log "installing missing tools: ${missing[*]}"
  local sudo=()
  [[ "$(id -u)" == 0 ]] || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    ca-certificates curl python3 util-linux redis-server >&2
}

cmd_install() {
  local c pid failed=0
  ensure_tools
  find_components
  local comps=("${PRESENT[@]}")
  local -A pids=()
  # Long builds (garage's Rust build, kube's and helm's Go builds) run side by
  # side with the quick installs; each component's install is idempotent and
  # locked.
  for c in "${comps[@]}"; do
    case "$c" in
      garage | kube | helm)
        bash "$(component_script "$c")" install &
        pids[$c]=$!
        ;;
    esac
  done
  for c in "${comps[@]}"; do
    [[ -n "${pids[$c]:-}" ]] && continue
    bash "$(component_script "$c")" install || { log "install of $c failed"; failed=1; }
  done
  for c in "${!pids[@]}"; do
    pid="${pids[$c]}"
    wait "$pid" || { log "install of $c failed"; failed=1; }
  done
  [[ "$failed" == 0 ]] || die "install failed"
  log "all components installed"
}

# ------------------------------------------------------------------ ports ---

# load_ports FREE [SAVE]: export every HERD_PORT_* variable. DIR/ports.env, once
# written, wins; otherwise a variable already set in the environment is kept,
# and the rest get their default or, with FREE=1, a port free right now.
# SAVE=1 (up) writes them all to DIR/ports.env, so that a port the stack gained
# after the file was first written stays the same from then on too.
load_ports() {
  local free="$1" save="${2:-0}" file="$STATE/ports.env" entry var def port
  if [[ -f "$file" ]]; then
    # shellcheck disable=SC1090
    source "$file"
    [[ "$free" == 1 ]] && log "reusing the ports of $file"
  fi
  local -A taken=()
  local out=""
  # Ports already chosen are taken even when their servers are down, and so
  # not free for a port added to the stack since.
  for entry in "${PORT_VARS[@]}"; do
    var="${entry%%=*}"
    if [[ -n "${!var:-}" ]]; then taken[${!var}]=1; fi
  done
  for entry in "${PORT_VARS[@]}"; do
    var="${entry%%=*}"
    def="${entry#*=}"
    port="${!var:-}"
    if [[ -z "$port" ]]; then
      if [[ "$free" == 1 ]]; then
        # The kernel may hand the same port out twice in a row: keep them distinct.
        port="$(free_port)"
        while [[ -n "${taken[$port]:-}" ]]; do port="$(free_port)"; done
      else
        port="$def"
      fi
    fi
    taken[$port]=1
    export "$var=$port"
    out+="export $var=$port"$'\n'
  done
  if [[ "$save" == 1 ]]; then
    printf '%s' "$out" >"$file.tmp"
    mv -f "$file.tmp" "$file"
  fi
}

# -------------------------------------------------------------- up / down ---

cmd_up() {
  local free="$1" c marker
  cmd_install
  local comps=("${PRESENT[@]}")
  load_ports "$free" 1
  mkdir -p "$STATE/logs"
  marker="$STATE/.starting"
  for c in "${comps[@]}"; do
    log "starting $c"
    touch "$marker"
    if ! bash "$(component_script "$c")" start "$STATE"; then
      local f
      # Show the logs this component wrote to during its start.
      for f in "$STATE"/logs/*.log; do
        [[ -f "$f" && "$f" -nt "$marker" ]] || continue
        printf '[herd-stack] ---- last lines of %s ----\n' "$f" >&2
        tail -n 20 "$f" >&2
      done
      rm -f "$marker"
      die "$c failed to start (state dir $STATE; stop with: deploy/stack.sh down --state-dir $STATE)"
    fi
  done
  rm -f "$marker"
  write_stack_env "${comps[@]}"
  log "stack is up: source $STATE/env"
}

# The key Herd seals credentials with: 32 random bytes, unpadded base64url,
# generated once per state dir like the other secrets.
herd_secret_key() {
  local file="$STATE/secrets/herd-secret-key"
  if [[ ! -s "$file" ]]; then
    mkdir -p "$STATE/secrets"
    (umask 077 && head -c 32 /dev/urandom | base64 -w0 | tr '+/' '-_' | tr -d '=' >"$file.tmp" && mv -f "$file.tmp" "$file")
  fi
  cat "$file"
}

write_stack_env() {
  local c out="$STATE/env"
  {
    echo "# generated by deploy/stack.sh up; source it"
    cat "$STATE/ports.env"
    for c in "$@"; do
      [[ -f "$STATE/env.d/$c.env" ]] || die "$c did not write $STATE/env.d/$c.env"
    done
    cat "$STATE"/env.d/*.env
    echo "export HERD_LISTEN_ADDR=127.0.0.1:$HERD_PORT_HERD"
    echo "export HERD_STATE_DIR=$STATE"
    echo "export HERD_SECRET_KEY=$(herd_secret_key)"
  } >"$out.tmp"
  chmod 600 "$out.tmp"
  mv -f "$out.tmp" "$out"
}

# state_pids: processes that still belong to the state dir: the state dir is
# in their command line or their working directory is inside it, and all their
# descendants. This shell and its ancestors (whose command lines may name the
# dir) are not counted; anything else naming the dir is (`tail -f DIR/...` too).
state_pids() {
  python3 - "$STATE" "$BASHPID" <<'PY'
import os, re, sys
state, me = sys.argv[1], int(sys.argv[2])
word = re.compile(r"(^|[\s=])" + re.escape(state) + r"(/\S*)?(\s|$)")
ppid, hits = {}, set()
for name in os.listdir("/proc"):
    if not name.isdigit():
        continue
    pid = int(name)
    try:
        with open(f"/proc/{pid}/stat") as f:
            ppid[pid] = int(f.read().rsplit(")", 1)[1].split()[1])
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            cwd = ""
    except (OSError, IndexError, ValueError):
        continue
    if word.search(cmd) or cwd == state or cwd.startswith(state + "/"):
        hits.add(pid)
mine, p = set(), me
while p > 0 and p not in mine:
    mine.add(p)
    p = ppid.get(p, 0)
hits -= mine
changed = True
while changed:
    changed = False
    for pid, parent in ppid.items():
        if parent in hits and pid not in hits and pid not in mine:
            hits.add(pid)
            changed = True
for pid in sorted(hits - mine):
    if pid != os.getpid():
        print(pid)
PY
}

cmd_down() {
  local comps=() c i pids
  for c in "${COMPONENTS[@]}"; do
    [[ -f "$(component_script "$c")" ]] && comps+=("$c")
  done
  [[ -d "$STATE" ]] || { log "no stack in $STATE"; return 0; }
  [[ -f "$STATE/ports.env" ]] && load_ports 0
  local failed=0
  for ((i = ${#comps[@]} - 1; i >= 0; i--)); do
    c="${comps[i]}"
    log "stopping $c"
    bash "$(component_script "$c")" stop "$STATE" || { log "warning: stopping $c failed"; failed=1; }
  done
  rm -f "$STATE/env"
  pids="$(state_pids | tr '\n' ' ')"
  if [[ -n "${pids// /}" ]]; then
    log "warning: processes left behind, killing them:"
    # shellcheck disable=SC2086
    ps -o pid=,args= -p "$(echo $pids | tr ' ' ',')" >&2 || true
    # shellcheck disable=SC2086
    kill -TERM $pids 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
      # shellcheck disable=SC2086
      kill -0 $pids 2>/dev/null || break
      sleep 0.1
    done
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null || true
    sleep 0.2
    pids="$(state_pids | tr '\n' ' ')"
    if [[ -n "${pids// /}" ]]; then
      # shellcheck disable=SC2086
      ps -o pid=,args= -p "$(echo $pids | tr ' ' ',')" >&2 || true
      die "processes of $STATE still running after kill: $pids"
    fi
  fi
  rm -f "$STATE"/pids/*.pid
  log "stack in $STATE is down; no process of it is left"
  [[ "$failed" == 0 ]] || return 1
}

cmd_status() {
  local c ok=0
  [[ -d "$STATE" ]] || { log "no stack in $STATE"; return 1; }
  [[ -f "$STATE/ports.env" ]] && load_ports 0
  for c in "${COMPONENTS[@]}"; do
    if [[ " ${HERD_STACK_SKIP:-} " == *" $c "* ]]; then
      printf '%-12s %s\n' "$c" "skipped (HERD_STACK_SKIP)"
      continue
    fi
    if [[ ! -f "$(component_script "$c")" ]]; then
      printf '%-12s %s\n' "$c" "absent (no deploy/components/$c.sh)"
      continue
    fi
    if bash "$(component_script "$c")" status "$STATE" >/dev/null 2>&1; then
      printf '%-12s %s\n' "$c" "up"
    else
      printf '%-12s %s\n' "$c" "DOWN"
      ok=1
    fi
  done
  if [[ -f "$STATE/env" ]]; then
    printf '%-12s %s\n' env "$STATE/env"
  else
    printf '%-12s %s\n' env "(none: run deploy/stack.sh up)"
    ok=1
  fi
  return "$ok"
}

cmd_env() {
  [[ -f "$STATE/env" ]] || die "no $STATE/env: run deploy/stack.sh up first"
  echo "$STATE/env"
}

# ------------------------------------------------------------------- main ---

[[ $# -ge 1 ]] || usage
CMD="$1"
shift
STATE="$HERD_REPO_ROOT/.herd"
FREE_PORTS=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --state-dir) [[ $# -ge 2 ]] || usage; STATE="$2"; shift 2 ;;
    --state-dir=*) STATE="${1#*=}"; shift ;;
    --free-ports) FREE_PORTS=1; shift ;;
    -h | --help) usage ;;
    *) log "unknown argument: $1"; usage ;;
  esac
done
if [[ "$CMD" == up ]]; then mkdir -p "$STATE"; fi
if [[ -d "$STATE" ]]; then STATE="$(cd "$STATE" && pwd -P)"; fi

case "$CMD" in
  install) cmd_install ;;
  up) cmd_up "$FREE_PORTS" ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env) cmd_env ;;
  *) usage ;;
esac
