#!/usr/bin/env bash
# A second Kubernetes cluster beside the first, so instances can be moved
# between clusters of one fleet: kube.sh run again with a state of its own in
# STATE_DIR/cluster-b and the HERD_PORT_B_* ports.
#
#   kube-b.sh install | start STATE_DIR | stop STATE_DIR | status STATE_DIR
#
# Ports (defaults for one developer stack):
#   HERD_PORT_B_ETCD 22379, HERD_PORT_B_ETCD_PEER 22380,
#   HERD_PORT_B_KUBE_APISERVER 26443, HERD_PORT_B_KUBE_CONTROLLER_MANAGER 20257,
#   HERD_PORT_B_KUBE_SCHEDULER 20259, HERD_PORT_B_KWOK 20247
#
# start writes STATE_DIR/env.d/kube-b.env: export HERD_KUBECONFIG_2=...
# shellcheck shell=bash

set -euo pipefail
# shellcheck source=../lib/common.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/../lib/common.sh"

KUBE_SH="$HERD_REPO_ROOT/deploy/components/kube.sh"

# kube_b COMMAND STATE_DIR: kube.sh COMMAND on the second cluster's state and ports.
kube_b() {
  env \
    HERD_PORT_ETCD="${HERD_PORT_B_ETCD:-22379}" \
    HERD_PORT_ETCD_PEER="${HERD_PORT_B_ETCD_PEER:-22380}" \
    HERD_PORT_KUBE_APISERVER="${HERD_PORT_B_KUBE_APISERVER:-26443}" \
    HERD_PORT_KUBE_CONTROLLER_MANAGER="${HERD_PORT_B_KUBE_CONTROLLER_MANAGER:-20257}" \
    HERD_PORT_KUBE_SCHEDULER="${HERD_PORT_B_KUBE_SCHEDULER:-20259}" \
    HERD_PORT_KWOK="${HERD_PORT_B_KWOK:-20247}" \
    bash "$KUBE_SH" "$1" "$2/cluster-b"
}

install() { bash "$KUBE_SH" install; }

start() {
  local state
  state="$(cd "$1" && pwd)"
  kube_b start "$state"
  printf 'export HERD_KUBECONFIG_2=%q\n' "$state/cluster-b/kube/admin.kubeconfig" |
    write_env_file "$state" kube-b
}

stop() {
  local state
  state="$(cd "$1" && pwd)"
  kube_b stop "$state"
  rm -f "$state/env.d/kube-b.env"
}

status() {
  local state
  state="$(cd "$1" && pwd)"
  kube_b status "$state"
}

component_main "$@"
