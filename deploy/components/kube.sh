#!/usr/bin/env bash
# Local Kubernetes control plane: real etcd, kube-apiserver,
# kube-controller-manager and kube-scheduler, with kwok playing the kubelets
# of a few fake nodes (no container ever runs; pods go Running/Ready, Job pods
# Succeeded, deleted pods disappear, as driven by the Stage objects from
# deploy/components/kube/stages/).
#
#   kube.sh install            build the binaries into $HERD_CACHE_DIR/bin (once per version)
#   kube.sh start STATE_DIR    start the cluster (idempotent), wait until it is usable
#   kube.sh stop STATE_DIR     stop every process of the cluster
#   kube.sh status STATE_DIR   exit 0 when every process is running and the API answers
#
# Everything listens on 127.0.0.1. Ports come from the environment (the
# defaults are for one developer stack; a second stack must pass others):
#   HERD_PORT_ETCD                     12379  etcd clients (plain HTTP, loopback only)
#   HERD_PORT_ETCD_PEER                12380  etcd peers
#   HERD_PORT_KUBE_APISERVER           16443  kube-apiserver (HTTPS)
#   HERD_PORT_KUBE_CONTROLLER_MANAGER  10257  kube-controller-manager secure port (/healthz, /metrics)
#   HERD_PORT_KUBE_SCHEDULER           10259  kube-scheduler secure port (/healthz, /metrics)
#   HERD_PORT_KWOK                     10247  kwok's server (/healthz, /metrics; plain HTTP)
#   HERD_KUBE_NODES                    3      number of fake nodes
#   HERD_KUBE_AUDIT                    0      1: the API server logs every request (who, verb,
#                                             resource) to STATE_DIR/kube/audit.log, so benchmarks
#                                             can count requests per client
#   HERD_KUBE_GOGC                     400    GOGC of etcd, the control plane and kwok
#
# start writes:
#   STATE_DIR/kube/admin.kubeconfig  client certificate in group system:masters
#   STATE_DIR/env.d/kube.env         export KUBECONFIG=... and HERD_KUBE_VERSION=...
#                                    (and HERD_KUBE_AUDIT_LOG=... when auditing)
#   STATE_DIR/logs/*.log, STATE_DIR/pids/*.pid (via start_daemon)
# shellcheck shell=bash

set -euo pipefail
# shellcheck source=../lib/common.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/../lib/common.sh"

KUBE_MODULE_DIR="$HERD_REPO_ROOT/deploy/components/kube"
ETCD_MODULE_DIR="$HERD_REPO_ROOT/deploy/components/etcd"
STAGES_DIR="$KUBE_MODULE_DIR/stages"

# Versions: Kubernetes and etcd are whatever the wrapper modules require.
module_version() {
  awk -v m="$2" '$1 == "require" && $2 == m { print $3; exit } $1 == m && $2 ~ /^v/ { print $2; exit }' "$1/go.mod"
}
KUBE_VERSION="$(module_version "$KUBE_MODULE_DIR" k8s.io/kubernetes)"
ETCD_VERSION="$(module_version "$ETCD_MODULE_DIR" go.etcd.io/etcd/server/v3)"
KWOK_VERSION=v0.8.0
[[ -n "$KUBE_VERSION" && -n "$ETCD_VERSION" ]] || die "cannot read versions from the wrapper go.mod files"

KUBE_BIN_DIR="$HERD_CACHE_DIR/bin/kube-$KUBE_VERSION"
ETCD_BIN_DIR="$HERD_CACHE_DIR/bin/etcd-$ETCD_VERSION"
KWOK_BIN_DIR="$HERD_CACHE_DIR/bin/kwok-$KWOK_VERSION"
HERD_KUBE="$KUBE_BIN_DIR/herd-kube"
HERD_ETCD="$ETCD_BIN_DIR/etcd"
HERD_KWOK="$KWOK_BIN_DIR/kwok"

PORT_ETCD="${HERD_PORT_ETCD:-12379}"
PORT_ETCD_PEER="${HERD_PORT_ETCD_PEER:-12380}"
PORT_APISERVER="${HERD_PORT_KUBE_APISERVER:-16443}"
PORT_CONTROLLER_MANAGER="${HERD_PORT_KUBE_CONTROLLER_MANAGER:-10257}"
PORT_SCHEDULER="${HERD_PORT_KUBE_SCHEDULER:-10259}"
PORT_KWOK="${HERD_PORT_KWOK:-10247}"
NODE_COUNT="${HERD_KUBE_NODES:-3}"
AUDIT="${HERD_KUBE_AUDIT:-0}"
# Go's garbage collector runs when the heap has grown by this percentage. At
# the default of 100 the API server spends about a third of its CPU in it
# while a fleet is provisioned; 400 gives that CPU to requests for a few
# hundred MB more memory (docs/benchmarks.md, "Where the time goes").
GO_GC_PERCENT="${HERD_KUBE_GOGC:-400}"

SERVICE_CIDR=10.96.0.0/16
SERVICE_IP=10.96.0.1
POD_CIDR=10.244.0.0/16
FAKE_NODE_IP=10.250.0.1

# The processes, in start order (stop goes the other way).
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)

# ---------------------------------------------------------------- install ---

# build_into FINAL_DIR DESCRIPTION FUNCTION HINT: run FUNCTION TMPDIR, then move
# TMPDIR to FINAL_DIR. An interrupted build leaves only a temp dir behind.
build_into() {
  local final="$1" what="$2" fn="$3" hint="$4" tmp
  if [[ -d "$final" ]]; then
    log "$what: present in $final"
    return 0
  fi
  mkdir -p "$(dirname "$final")"
  tmp="$(mktemp -d "$(dirname "$final")/.build-$(basename "$final").XXXXXX")"
  log "$what: building (first time only; $hint)"
  local started=$SECONDS
  if ! "$fn" "$tmp"; then
    rm -rf "$tmp"
    die "$what: build failed"
  fi
  chmod 755 "$tmp"
  if ! mv -T "$tmp" "$final" 2>/dev/null; then
    # Someone else finished the same build meanwhile.
    rm -rf "$tmp"
    [[ -d "$final" ]] || die "$what: cannot move the build to $final"
  fi
  log "$what: built in $((SECONDS - started))s into $final"
}

go_build_env() {
  # -mod=readonly: the committed go.sum is the pinned dependency set.
  env GOFLAGS="-trimpath -buildvcs=false -mod=readonly" CGO_ENABLED=0 "$@"
}

build_kube() {
  local v=k8s.io/component-base/version minor
  minor="$(cut -d. -f2 <<<"${KUBE_VERSION#v}")"
  (cd "$KUBE_MODULE_DIR" && go_build_env go build \
    -ldflags "-s -w -X $v.gitVersion=$KUBE_VERSION -X $v.gitMajor=1 -X $v.gitMinor=$minor -X $v.gitTreeState=clean -X $v.gitCommit=" \
    -o "$1/herd-kube" ./cmd/herd-kube)
}

build_etcd() {
  (cd "$ETCD_MODULE_DIR" && go_build_env go build -ldflags "-s -w" -o "$1/etcd" ./cmd/herd-etcd)
}

build_kwok() {
  # kwok's own module is installable as is; run outside our modules.
  (cd "$1" && env GOFLAGS="-trimpath -buildvcs=false" CGO_ENABLED=0 GOBIN="$1" \
    go install -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION")
}

# The directory of kwok's module, from the module cache (filled by the
# install, or fetched again when only the binary is cached).
kwok_module_dir() {
  (cd / && go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION") | jq -r .Dir
}

# kwok reads its Stages from the API server, so tests can add and remove
# stages of their own while it runs: its Stage CRD, then our stages.
apply_stages() {
  local crd
  crd="$(kwok_module_dir)/kustomize/crd/bases/kwok.x-k8s.io_stages.yaml"
  [[ -f "$crd" ]] || die "kwok's Stage CRD is missing: $crd"
  kubectl_admin apply --server-side --force-conflicts -f "$crd" >/dev/null
  # Not `kubectl wait --for condition=established`: it fails at once, instead
  # of waiting, when it reads the CRD before its status has any conditions.
  wait_for 60 "kwok's Stage CRD to be established" stage_crd_established
  kubectl_admin apply --server-side --force-conflicts -f "$STAGES_DIR" >/dev/null
}

stage_crd_established() {
  [[ "$(kubectl_admin get crd stages.kwok.x-k8s.io \
    -o jsonpath='{.status.conditions[?(@.type=="Established")].status}')" == True ]]
}

cmd_install() {
  command -v go >/dev/null || die "go is required to build the Kubernetes components"
  # Concurrent installs (two clones, two stacks) wait for each other.
  cache_lock kube
  build_into "$ETCD_BIN_DIR" "etcd $ETCD_VERSION" build_etcd "a few minutes"
  build_into "$KWOK_BIN_DIR" "kwok $KWOK_VERSION" build_kwok "a few minutes"
  build_into "$KUBE_BIN_DIR" "kubernetes $KUBE_VERSION" build_kube "10 to 20 minutes on 2 cores"
}

# -------------------------------------------------------------------- pki ---

# new_key FILE: an ECDSA P-256 private key.
new_key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

# ensure_ca PKI NAME CN: a self-signed CA, unless it exists. A new CA throws
# away the certificates it signed (their names start with NAME's prefix).
ensure_ca() {
  local pki="$1" name="$2" cn="$3"
  [[ -s "$pki/$name.crt" && -s "$pki/$name.key" ]] && return 0
  new_key "$pki/$name.key"
  openssl req -x509 -new -key "$pki/$name.key" -subj "/CN=$cn" -days 3650 -sha256 \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,digitalSignature,keyCertSign,cRLSign" \
    -out "$pki/$name.crt"
  return 1
}

# sign PKI NAME SUBJECT EXTENSIONS [CA]: a key and a certificate signed by CA
# (default: ca).
sign() {
  local pki="$1" name="$2" subject="$3" ext="$4" ca="${5:-ca}"
  [[ -s "$pki/$name.crt" && -s "$pki/$name.key" ]] && return 0
  new_key "$pki/$name.key"
  openssl req -new -key "$pki/$name.key" -subj "$subject" -out "$pki/$name.csr"
  printf '%s\n' "$ext" >"$pki/$name.ext"
  openssl x509 -req -in "$pki/$name.csr" -CA "$pki/$ca.crt" -CAkey "$pki/$ca.key" \
    -set_serial "0x$(openssl rand -hex 12)" -days 3650 -sha256 \
    -extfile "$pki/$name.ext" -out "$pki/$name.crt" 2>/dev/null
  rm -f "$pki/$name.csr" "$pki/$name.ext"
}

client_ext='basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth'

ensure_pki() {
  local pki="$1"
  mkdir -p "$pki"
  chmod 700 "$pki"
  # The cluster CA signs the serving and client certificates; the front-proxy
  # CA signs only the client certificate the API server uses to call
  # aggregated API servers (request-header authentication), as kubeadm does.
  if ! ensure_ca "$pki" ca herd-local-kubernetes-ca; then
    find "$pki" -maxdepth 1 -name '*.crt' ! -name 'ca.crt' ! -name 'front-proxy-*' -delete
  fi
  ensure_ca "$pki" front-proxy-ca herd-local-front-proxy-ca || rm -f "$pki/front-proxy-client.crt"
  sign "$pki" front-proxy-client "/CN=front-proxy-client" "$client_ext" front-proxy-ca
  sign "$pki" apiserver "/CN=kube-apiserver" "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:$SERVICE_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  sign "$pki" apiserver-kubelet-client "/CN=kube-apiserver-kubelet-client" "$client_ext"
  sign "$pki" admin "/O=system:masters/CN=herd-admin" "$client_ext"
  sign "$pki" controller-manager "/CN=system:kube-controller-manager" "$client_ext"
  sign "$pki" scheduler "/CN=system:kube-scheduler" "$client_ext"
  # kwok plays every kubelet and patches any node or pod: cluster admin.
  sign "$pki" kwok "/O=system:masters/CN=herd-kwok" "$client_ext"
  # ServiceAccount token signing key pair.
  if [[ ! -s "$pki/sa.key" || ! -s "$pki/sa.pub" ]]; then
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$pki/sa.key" 2>/dev/null
    openssl pkey -in "$pki/sa.key" -pubout -out "$pki/sa.pub"
  fi
  chmod 600 "$pki"/*.key
}

# write_kubeconfig FILE USER: kubeconfig with the client certificate pki/USER.
write_kubeconfig() {
  local file="$1" user="$2" pki="$3" tmp
  tmp="$(mktemp "$file.XXXXXX")"
  cat >"$tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: herd-local
  cluster:
    server: https://127.0.0.1:$PORT_APISERVER
    certificate-authority-data: $(base64 -w0 <"$pki/ca.crt")
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 <"$pki/$user.crt")
    client-key-data: $(base64 -w0 <"$pki/$user.key")
contexts:
- name: herd-local
  context:
    cluster: herd-local
    user: $user
current-context: herd-local
EOF
  chmod 600 "$tmp"
  mv -f "$tmp" "$file"
}

# ------------------------------------------------------------------ start ---

state_paths() {
  STATE="$(mkdir -p "$1" && cd "$1" && pwd)"
  KDIR="$STATE/kube"
  PKI="$KDIR/pki"
  ADMIN_KUBECONFIG="$KDIR/admin.kubeconfig"
  ENV_FILE="$STATE/env.d/kube.env"
}

kubectl_admin() { kubectl --kubeconfig "$ADMIN_KUBECONFIG" --request-timeout=10s "$@"; }

write_env() {
  {
    printf 'export KUBECONFIG=%q\nexport HERD_KUBE_VERSION=%q\n' "$ADMIN_KUBECONFIG" "$KUBE_VERSION"
    [[ "$AUDIT" != 1 ]] || printf 'export HERD_KUBE_AUDIT_LOG=%q\n' "$KDIR/audit.log"
  } | write_env_file "$STATE" kube
}

# audit_flags: the API server's audit options when HERD_KUBE_AUDIT=1. One
# event per finished request, metadata only (no bodies: Secrets stay out), and
# no rotation, so a benchmark reads every request it caused from one file.
audit_flags() {
  [[ "$AUDIT" == 1 ]] || return 0
  cat >"$KDIR/audit-policy.yaml" <<'YAML'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived, ResponseStarted]
rules:
  - level: Metadata
YAML
  printf '%s\n' --audit-policy-file "$KDIR/audit-policy.yaml" \
    --audit-log-path "$KDIR/audit.log" --audit-log-maxsize 0
}

all_running() {
  local c
  for c in "${COMPONENTS[@]}"; do daemon_running "$STATE" "$c" || return 1; done
}

ready_nodes() {
  kubectl_admin get nodes --no-headers 2>/dev/null | awk '$2 == "Ready" { n++ } END { print n + 0 }'
}

enough_ready_nodes() { (($(ready_nodes) >= NODE_COUNT)); }

cluster_usable() {
  kubectl_admin get --raw /readyz >/dev/null 2>&1 &&
    enough_ready_nodes &&
    kubectl_admin -n default get serviceaccount default >/dev/null 2>&1
}

# ensure_daemon NAME PORT COMMAND...: start NAME unless it is running already.
ensure_daemon() {
  local name="$1" port="$2"
  shift 2
  daemon_running "$STATE" "$name" && return 0
  if [[ "$port" != - ]] && (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    die "$name: port $port is already taken by another process (set the HERD_PORT_* variables)"
  fi
  log "starting $name${port:+ on 127.0.0.1:$port}"
  start_daemon "$STATE" "$name" env GOGC="$GO_GC_PERCENT" "$@"
}

# check_alive NAME: fail with the end of its log when NAME died.
check_alive() {
  daemon_running "$STATE" "$1" && return 0
  log_tail "$STATE" "$1"
  die "$1 exited; log: $STATE/logs/$1.log"
}

# wait_alive NAME SECONDS DESCRIPTION COMMAND...: wait_for, but stop early
# when the process died.
wait_alive() {
  local name="$1" seconds="$2" what="$3" i
  shift 3
  for ((i = 0; i < seconds * 2; i++)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    check_alive "$name"
    sleep 0.5
  done
  log_tail "$STATE" "$name"
  die "timed out after ${seconds}s waiting for $what"
}

create_fake_nodes() {
  local i manifest=""
  for ((i = 0; i < NODE_COUNT; i++)); do
    manifest+="---
apiVersion: v1
kind: Node
metadata:
  name: herd-node-$i
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: \"0\"
  labels:
    kubernetes.io/arch: amd64
    kubernetes.io/os: linux
    kubernetes.io/hostname: herd-node-$i
    node-role.kubernetes.io/worker: \"\"
    topology.kubernetes.io/region: local
    topology.kubernetes.io/zone: local-$((i % 3))
    type: kwok
status:
  capacity: {cpu: \"32\", memory: 128Gi, pods: \"250\", ephemeral-storage: 1Ti}
  allocatable: {cpu: \"32\", memory: 128Gi, pods: \"250\", ephemeral-storage: 1Ti}
"
  done
  # create, not apply: existing nodes (a restart) are left as they are.
  kubectl_admin create -f - <<<"$manifest" 2>&1 | grep -v AlreadyExists >&2 || true
}

cmd_start() {
  [[ $# -eq 1 ]] || die "usage: kube.sh start STATE_DIR"
  state_paths "$1"
  [[ -x "$HERD_KUBE" && -x "$HERD_ETCD" && -x "$HERD_KWOK" ]] ||
    die "Kubernetes binaries missing in $HERD_CACHE_DIR/bin: run deploy/components/kube.sh install"
  command -v kubectl >/dev/null || die "kubectl is required"
  command -v jq >/dev/null || die "jq is required"
  command -v go >/dev/null || die "go is required to find kwok's Stage CRD"

  if all_running && [[ -s "$ADMIN_KUBECONFIG" ]] && cluster_usable; then
    write_env
    log "kubernetes $KUBE_VERSION already running at https://127.0.0.1:$PORT_APISERVER"
    return 0
  fi

  mkdir -p "$KDIR/etcd" "$KDIR/kwok"
  chmod 700 "$KDIR/etcd"
  ensure_pki "$PKI"
  write_kubeconfig "$ADMIN_KUBECONFIG" admin "$PKI"
  write_kubeconfig "$KDIR/controller-manager.kubeconfig" controller-manager "$PKI"
  write_kubeconfig "$KDIR/scheduler.kubeconfig" scheduler "$PKI"
  write_kubeconfig "$KDIR/kwok.kubeconfig" kwok "$PKI"

  ensure_daemon etcd "$PORT_ETCD" "$HERD_ETCD" \
    --name herd-local \
    --data-dir "$KDIR/etcd" \
    --listen-client-urls "http://127.0.0.1:$PORT_ETCD" \
    --advertise-client-urls "http://127.0.0.1:$PORT_ETCD" \
    --listen-peer-urls "http://127.0.0.1:$PORT_ETCD_PEER" \
    --initial-advertise-peer-urls "http://127.0.0.1:$PORT_ETCD_PEER" \
    --initial-cluster "herd-local=http://127.0.0.1:$PORT_ETCD_PEER" \
    --unsafe-no-fsync \
    --log-level warn
  wait_alive etcd 60 "etcd on 127.0.0.1:$PORT_ETCD" curl -fsS "http://127.0.0.1:$PORT_ETCD/health"

  local audit
  mapfile -t audit < <(audit_flags)
  ensure_daemon kube-apiserver "$PORT_APISERVER" "$HERD_KUBE" apiserver \
    --bind-address 127.0.0.1 \
    --advertise-address 127.0.0.1 \
    --secure-port "$PORT_APISERVER" \
    --etcd-servers "http://127.0.0.1:$PORT_ETCD" \
    --tls-cert-file "$PKI/apiserver.crt" \
    --tls-private-key-file "$PKI/apiserver.key" \
    --client-ca-file "$PKI/ca.crt" \
    --requestheader-client-ca-file "$PKI/front-proxy-ca.crt" \
    --requestheader-allowed-names front-proxy-client \
    --requestheader-username-headers X-Remote-User \
    --requestheader-group-headers X-Remote-Group \
    --requestheader-extra-headers-prefix X-Remote-Extra- \
    --proxy-client-cert-file "$PKI/front-proxy-client.crt" \
    --proxy-client-key-file "$PKI/front-proxy-client.key" \
    --kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" \
    --kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
    --authorization-mode Node,RBAC \
    --enable-admission-plugins NodeRestriction \
    --allow-privileged=true \
    --service-cluster-ip-range "$SERVICE_CIDR" \
    --service-account-issuer "https://kubernetes.default.svc.cluster.local" \
    --service-account-key-file "$PKI/sa.pub" \
    --service-account-signing-key-file "$PKI/sa.key" \
    --endpoint-reconciler-type none \
    "${audit[@]}" \
    --profiling=false
  wait_alive kube-apiserver 120 "kube-apiserver /readyz on 127.0.0.1:$PORT_APISERVER" \
    kubectl_admin get --raw /readyz

  # Client rate limits above Kubernetes' defaults (controller manager 20/s,
  # scheduler 50/s: a binding and an event per pod): a fleet of a thousand
  # instances brings pods by the thousand, and a real cluster of that size
  # runs its control plane with the same kind of settings.
  ensure_daemon kube-controller-manager "$PORT_CONTROLLER_MANAGER" "$HERD_KUBE" controller-manager \
    --kubeconfig "$KDIR/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$KDIR/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$KDIR/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 \
    --secure-port "$PORT_CONTROLLER_MANAGER" \
    --cert-dir "$KDIR/controller-manager-certs" \
    --leader-elect=false \
    --use-service-account-credentials \
    --service-account-private-key-file "$PKI/sa.key" \
    --root-ca-file "$PKI/ca.crt" \
    --cluster-signing-cert-file "$PKI/ca.crt" \
    --cluster-signing-key-file "$PKI/ca.key" \
    --service-cluster-ip-range "$SERVICE_CIDR" \
    --cluster-name herd-local \
    --kube-api-qps 100 \
    --kube-api-burst 200 \
    --profiling=false

  ensure_daemon kube-scheduler "$PORT_SCHEDULER" "$HERD_KUBE" scheduler \
    --kubeconfig "$KDIR/scheduler.kubeconfig" \
    --authentication-kubeconfig "$KDIR/scheduler.kubeconfig" \
    --authorization-kubeconfig "$KDIR/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 \
    --secure-port "$PORT_SCHEDULER" \
    --cert-dir "$KDIR/scheduler-certs" \
    --leader-elect=false \
    --kube-api-qps 200 \
    --kube-api-burst 400 \
    --profiling=false

  if ! daemon_running "$STATE" kwok; then
    # Leases left by a previous kwok: the new one would wait for them to
    # expire (about 50s, long enough for nodes to turn NotReady) before
    # taking them over, so let it create fresh ones.
    local leases=() i
    for ((i = 0; i < NODE_COUNT; i++)); do leases+=("herd-node-$i"); done
    kubectl_admin -n kube-node-lease delete lease --ignore-not-found "${leases[@]}" >/dev/null
  fi
  apply_stages
  # KWOK_WORKDIR keeps kwok away from a ~/.kwok/kwok.yaml of the user.
  ensure_daemon kwok "$PORT_KWOK" env KWOK_WORKDIR="$KDIR/kwok" "$HERD_KWOK" \
    --enable-crds=Stage \
    --kubeconfig "$KDIR/kwok.kubeconfig" \
    --manage-all-nodes=false \
    --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
    --node-ip "$FAKE_NODE_IP" \
    --cidr "$POD_CIDR" \
    --node-lease-duration-seconds 40 \
    --server-address "127.0.0.1:$PORT_KWOK"

  create_fake_nodes
  wait_alive kwok 120 "$NODE_COUNT Ready fake nodes" enough_ready_nodes
  wait_alive kube-controller-manager 120 "the default ServiceAccount (controller-manager)" \
    kubectl_admin -n default get serviceaccount default
  check_alive kube-scheduler
  write_env
  log "kubernetes $KUBE_VERSION ready at https://127.0.0.1:$PORT_APISERVER; KUBECONFIG=$ADMIN_KUBECONFIG"
}

# ------------------------------------------------------------------- stop ---

cmd_stop() {
  [[ $# -eq 1 ]] || die "usage: kube.sh stop STATE_DIR"
  [[ -d "$1" ]] || return 0
  state_paths "$1"
  local i
  for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do
    if daemon_running "$STATE" "${COMPONENTS[i]}"; then log "stopping ${COMPONENTS[i]}"; fi
    stop_daemon "$STATE" "${COMPONENTS[i]}"
  done
  rm -f "$ENV_FILE"
}

cmd_status() {
  [[ $# -eq 1 ]] || die "usage: kube.sh status STATE_DIR"
  state_paths "$1"
  all_running && cluster_usable
}

case "${1:-}" in
  install) shift; cmd_install "$@" ;;
  start) shift; cmd_start "$@" ;;
  stop) shift; cmd_stop "$@" ;;
  status) shift; cmd_status "$@" ;;
  *) die "usage: kube.sh install | start STATE_DIR | stop STATE_DIR | status STATE_DIR" ;;
esac
