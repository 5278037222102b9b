#!/usr/bin/env bash
# Local Kubernetes control plane for cadbroker's tests: etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler and KWOK (fake kubelets on fake GPU nodes), all as
# plain processes on loopback, built from Go modules into a version-keyed cache.
#
#   tests/cluster/cluster.sh build          build missing binaries into the cache
#   tests/cluster/cluster.sh build-helm     build helm (for the chart tests) into its own cache
#   tests/cluster/cluster.sh helm -- ARGS   run the cached helm (building it first if missing)
#   tests/cluster/cluster.sh up             build if needed, start, wait, register GPU nodes
#   tests/cluster/cluster.sh down           stop what `up` started, remove .cluster/ state
#   tests/cluster/cluster.sh status         is it up?
#   tests/cluster/cluster.sh run -- CMD...  up, run CMD with KUBECONFIG set, always down
#   tests/cluster/cluster.sh smoke          go test the running cluster (tests/cluster/k8s/smoke)
#
# Environment (all optional):
#   CADBROKER_CACHE         cache root (default ~/.cache/cadbroker); binaries go to
#                           $CADBROKER_CACHE/k8s-<K8S_VERSION>/bin, helm to
#                           $CADBROKER_CACHE/helm-<HELM_VERSION>/bin
#   CLUSTER_APISERVER_PORT  kube-apiserver port on 127.0.0.1 (default 16443)
#   CLUSTER_ETCD_PORT       etcd client port on 127.0.0.1 (default 16379; peer port +1)
#   CLUSTER_PORT_BASE       first of the ports of kcm/scheduler/kwok (default 16450)
#   CLUSTER_NODES           node spec file (default tests/cluster/nodes.txt)
#   CLUSTER_POD_START_DELAY_MS  simulated pod start delay in ms (default 2000)
#   CLUSTER_POD_START_JITTER_MS random extra delay in ms on top (default 0)
#   CLUSTER_UP_TIMEOUT      seconds to wait for readiness (default 120)
# Docs: docs/testing.md
set -Eeuo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
# shellcheck source-path=SCRIPTDIR source=versions.env
. "$HERE/versions.env"

CACHE_ROOT="${CADBROKER_CACHE:-$HOME/.cache/cadbroker}"
BIN="$CACHE_ROOT/k8s-$K8S_VERSION/bin"
HELM_BIN="$CACHE_ROOT/helm-$HELM_VERSION/bin"
STATE="$REPO/.cluster"
KUBECONFIG_PATH="$STATE/kubeconfig"
# kubectl (ours, and the one kwokctl runs) keeps its discovery/http cache here, not in ~/.kube.
export KUBECACHEDIR="$STATE/kube-cache"

APISERVER_PORT="${CLUSTER_APISERVER_PORT:-16443}"
ETCD_PORT="${CLUSTER_ETCD_PORT:-16379}"
ETCD_PEER_PORT="$((ETCD_PORT + 1))"
PORT_BASE="${CLUSTER_PORT_BASE:-16450}"
KCM_PORT="$((PORT_BASE + 0))"
SCHED_PORT="$((PORT_BASE + 1))"
KWOK_PORT="$((PORT_BASE + 2))"
NODES_FILE="${CLUSTER_NODES:-$HERE/nodes.txt}"
POD_START_DELAY_MS="${CLUSTER_POD_START_DELAY_MS:-2000}"
POD_START_JITTER_MS="${CLUSTER_POD_START_JITTER_MS:-0}"
UP_TIMEOUT="${CLUSTER_UP_TIMEOUT:-120}"
# kwok's fallback pod CIDR (its built-in default is a private range: never use it). Every node
# also gets its own 127.x podCIDR from the node spec file.
KWOK_CIDR=127.200.0.0/16
KWOK_NODE_IP=127.0.0.1

K8S_BINS=(kube-apiserver kube-controller-manager kube-scheduler kubectl)

# fds 3/4: the script's own stdout/stderr. A trap that fires while a command's output is
# redirected (e.g. kwokctl >up.log) inherits that redirection; log/die/traps use these instead.
exec 3>&1 4>&2
log() { printf '[cluster] %s\n' "$*" >&4; }
die() { printf '[cluster] error: %s\n' "$*" >&4; exit 1; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# ---------------------------------------------------------------------------------------------
# build

need_go() {
  command -v go >/dev/null 2>&1 || die "go not found in PATH: Go >= 1.26 is needed to build the cluster binaries (or fill $BIN by hand)"
  local v
  v="$(GOTOOLCHAIN=local go env GOVERSION)"
  case "$v" in
    go1.2[6-9]* | go1.[3-9]* | go[2-9]*) ;;
    *) die "Go $v is too old: Kubernetes $K8S_VERSION needs Go >= 1.26 (GOTOOLCHAIN=local is used, no toolchain download)" ;;
  esac
}

# Refuse to build when versions.env and the wrapper go.mod files disagree.
check_pins() {
  grep -Eq "^(require)?\s*k8s\.io/kubernetes $K8S_VERSION( |\$)" "$HERE/k8s/go.mod" ||
    die "tests/cluster/k8s/go.mod does not require k8s.io/kubernetes $K8S_VERSION (versions.env); see the comments in versions.env"
  local staging="v0.${K8S_VERSION#v1.}"
  if grep -E '^\s*k8s\.io/[a-z-]+ => k8s\.io/[a-z-]+ v' "$HERE/k8s/go.mod" | grep -vq " $staging\$"; then
    die "tests/cluster/k8s/go.mod: not every staging replace is at $staging"
  fi
  grep -Eq "^\s*go\.etcd\.io/etcd/server/v3 $ETCD_VERSION( |\$)" "$HERE/etcd/go.mod" ||
    die "tests/cluster/etcd/go.mod does not require go.etcd.io/etcd/server/v3 $ETCD_VERSION (versions.env)"
  grep -Eq "^\s*sigs\.k8s\.io/kwok $KWOK_VERSION( |\$)" "$HERE/kwok/go.mod" ||
    die "tests/cluster/kwok/go.mod does not require sigs.k8s.io/kwok $KWOK_VERSION (versions.env)"
}

check_helm_pin() {
  grep -Eq "^(require)?\s*helm\.sh/helm/v4 $HELM_VERSION( |\$)" "$HERE/helm/go.mod" ||
    die "tests/cluster/helm/go.mod does not require helm.sh/helm/v4 $HELM_VERSION (versions.env)"
}

# A binary counts as present when it exists and its stamp names the pinned version, so
# bumping etcd or KWOK alone rebuilds just that binary.
# BUILD_BIN (default $BIN) is the directory being filled.
have() {
  local bin="${BUILD_BIN:-$BIN}"
  [[ -x "$bin/$1" && "$(cat "$bin/.$1.version" 2>/dev/null)" == "$2" ]]
}

# build_one NAME VERSION MODULE_DIR PACKAGE [LDFLAGS]
build_one() {
  local name="$1" version="$2" dir="$3" pkg="$4" ldflags="${5:-}" t0 ticker rc=0
  local BIN="${BUILD_BIN:-$BIN}"
  if have "$name" "$version"; then
    log "build: $name $version present, skipped"
    return 0
  fi
  log "build: $name $version ($pkg) ..."
  t0="$(now)"
  # go build is silent for minutes: keep CI logs alive.
  (while sleep 60 >/dev/null 2>&1 3>&- 4>&-; do log "build: ... $name still building ($(elapsed "$t0")s)"; done) &
  ticker=$!
  (
    cd "$HERE/$dir"
    # -mod=readonly: go.sum in the repo pins every module; nothing is resolved at build time.
    GOTOOLCHAIN=local GOWORK=off GOFLAGS="-mod=readonly -buildvcs=false" CGO_ENABLED=0 \
      nice -n 19 go build -trimpath -tags selinux,notest -ldflags "-s -w $ldflags" \
      -o "$BIN/.$name.tmp" "$pkg"
  ) || rc=$?
  kill "$ticker" 2>/dev/null || true
  wait "$ticker" 2>/dev/null || true
  if ((rc != 0)); then
    rm -f "$BIN/.$name.tmp"
    die "build of $name failed (see the go output above)"
  fi
  mv -f "$BIN/.$name.tmp" "$BIN/$name"
  echo "$version" >"$BIN/.$name.version"
  log "build: $name done in $(elapsed "$t0")s ($(du -h "$BIN/$name" | cut -f1))"
}

cmd_build() {
  local missing=() b
  have etcd "$ETCD_VERSION" || missing+=(etcd)
  have kwok "$KWOK_VERSION" || missing+=(kwok)
  have kwokctl "$KWOK_VERSION" || missing+=(kwokctl)
  for b in "${K8S_BINS[@]}"; do have "$b" "$K8S_VERSION" || missing+=("$b"); done
  if ((${#missing[@]} == 0)); then
    log "build: all binaries present in $BIN"
    return 0
  fi
  need_go
  check_pins
  mkdir -p "$BIN"
  log "build: missing ${missing[*]} -> $BIN (a cold build of all seven takes ~20-30 min on 2 cores)"
  local t0 minor k8s_ldf
  t0="$(now)"
  minor="${K8S_VERSION#v1.}"
  minor="${minor%%.*}"
  k8s_ldf=""
  local p
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    k8s_ldf+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
    k8s_ldf+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  build_one etcd "$ETCD_VERSION" etcd go.etcd.io/etcd/server/v3
  build_one kwok "$KWOK_VERSION" kwok sigs.k8s.io/kwok/cmd/kwok
  build_one kwokctl "$KWOK_VERSION" kwok sigs.k8s.io/kwok/cmd/kwokctl
  for b in "${K8S_BINS[@]}"; do
    build_one "$b" "$K8S_VERSION" k8s "k8s.io/kubernetes/cmd/$b" "$k8s_ldf"
  done
  log "build: all done in $(elapsed "$t0")s; cache: $(du -sh "$BIN" | cut -f1) in $BIN"
}

# helm for the chart tests (tests/charts/run.sh): its own wrapper module and cache directory, so
# bumping it never rebuilds the control plane and vice versa.
cmd_build_helm() {
  if BUILD_BIN="$HELM_BIN" have helm "$HELM_VERSION"; then
    log "build-helm: helm $HELM_VERSION present in $HELM_BIN"
    return 0
  fi
  need_go
  check_helm_pin
  mkdir -p "$HELM_BIN"
  BUILD_BIN="$HELM_BIN" build_one helm "$HELM_VERSION" helm helm.sh/helm/v4/cmd/helm \
    "-X helm.sh/helm/v4/internal/version.version=$HELM_VERSION -X helm.sh/helm/v4/internal/version.gitTreeState=clean"
}

# The cached helm, built first if missing. Its caches and config stay under .cluster/helm, never
# in the user's ~/.cache/helm or ~/.config/helm.
cmd_helm() {
  [[ "${1:-}" == "--" ]] && shift
  BUILD_BIN="$HELM_BIN" have helm "$HELM_VERSION" || cmd_build_helm >&4
  mkdir -p "$STATE/helm"
  HELM_CACHE_HOME="$STATE/helm/cache" HELM_CONFIG_HOME="$STATE/helm/config" \
    HELM_DATA_HOME="$STATE/helm/data" "$HELM_BIN/helm" "$@"
}

# ---------------------------------------------------------------------------------------------
# up / down

KWOK_WORKDIR_PATH="$STATE/kwok"
CLUSTER_NAME=cadbroker
CLUSTER_DIR="$KWOK_WORKDIR_PATH/clusters/$CLUSTER_NAME"

# 3>&- 4>&-: the cluster processes kwokctl leaves running must not inherit the script's saved
# stdout/stderr, or `cluster.sh up | tee log` would never see EOF.
kwokctl() { KWOK_WORKDIR="$KWOK_WORKDIR_PATH" "$BIN/kwokctl" "$@" 3>&- 4>&-; }
kctl() { "$BIN/kubectl" --kubeconfig "$KUBECONFIG_PATH" "$@"; }

is_up() {
  [[ -s "$KUBECONFIG_PATH" && -x "$BIN/kubectl" ]] &&
    kctl get --raw /readyz --request-timeout=3s >/dev/null 2>&1
}

in_loopback() { [[ "$1" =~ ^127\.([0-9]{1,3}\.){2}[0-9]{1,3}(/[0-9]{1,2})?$ ]]; }

port_in_use() {
  # bash's /dev/tcp: connecting succeeds only if something listens on 127.0.0.1:$1
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

check_ports() {
  local p busy=()
  for p in "$APISERVER_PORT" "$ETCD_PORT" "$ETCD_PEER_PORT" "$KCM_PORT" "$SCHED_PORT" "$KWOK_PORT"; do
    port_in_use "$p" && busy+=("$p")
  done
  ((${#busy[@]} == 0)) ||
    die "port(s) ${busy[*]} on 127.0.0.1 already in use; another cluster running? (try: $0 down) or set CLUSTER_APISERVER_PORT / CLUSTER_ETCD_PORT / CLUSTER_PORT_BASE"
}

# KwokctlConfiguration + Stages, one file for `kwokctl --config`.
render_config() {
  local max=$((POD_START_DELAY_MS + POD_START_JITTER_MS))
  [[ "$POD_START_DELAY_MS" =~ ^[0-9]+$ && "$POD_START_JITTER_MS" =~ ^[0-9]+$ ]] ||
    die "CLUSTER_POD_START_DELAY_MS / CLUSTER_POD_START_JITTER_MS must be whole milliseconds"
  cat <<EOF
# Generated by tests/cluster/cluster.sh up; do not edit (edit the script or stages.yaml).
apiVersion: config.kwok.x-k8s.io/v1alpha1
kind: KwokctlConfiguration
options:
  runtime: binary
  bindAddress: 127.0.0.1
  kubeApiserverPort: $APISERVER_PORT
  etcdPort: $ETCD_PORT
  etcdPeerPort: $ETCD_PEER_PORT
  kubeControllerManagerPort: $KCM_PORT
  kubeSchedulerPort: $SCHED_PORT
  kwokControllerPort: $KWOK_PORT
  etcdBinary: $BIN/etcd
  kubeApiserverBinary: $BIN/kube-apiserver
  kubeControllerManagerBinary: $BIN/kube-controller-manager
  kubeSchedulerBinary: $BIN/kube-scheduler
  kwokControllerBinary: $BIN/kwok
  kubectlBinary: $BIN/kubectl
  cacheDir: $KWOK_WORKDIR_PATH/cache
  disableQPSLimits: true
componentsPatches:
- name: etcd
  extraArgs:
  # Throwaway test data: skip fsync (as controller-runtime's envtest does); slow CI disks
  # otherwise make every write, and so every test, wait on the disk.
  - key: unsafe-no-fsync
    value: "true"
- name: kube-apiserver
  extraArgs:
  # Loopback only. Left alone, the apiserver advertises the host's default-route address.
  - key: advertise-address
    value: 127.0.0.1
  # Endpoints may not hold loopback addresses, so the reconciler of the "kubernetes" Service
  # endpoints would fail forever: switch it off (nothing in the test cluster uses that Service).
  - key: endpoint-reconciler-type
    value: none
  # On top of the default admission plugins, as hardened clusters (OpenShift, for one) run it:
  # setting an owner reference with blockOwnerDeletion needs update on the owner's finalizers,
  # so the chart tests' RBAC proof covers that rule (the admin identity bypasses it).
  - key: enable-admission-plugins
    value: OwnerReferencesPermissionEnforcement
- name: kwok-controller
  extraArgs:
  # kwokctl passes an empty --node-ip; nodes without an InternalIP would get this one.
  - key: node-ip
    value: $KWOK_NODE_IP
    override: true
  # kwok's default pod CIDR is a private range: only used for nodes without spec.podCIDR.
  - key: cidr
    value: $KWOK_CIDR
# No KwokConfiguration document on purpose: kwok does not apply its defaults to one loaded
# from a file (it then dies with "node leases parallelism must be greater than 0"); the two
# options that matter are passed as flags above.
EOF
  grep -v '^#' "$HERE/stages.yaml" |
    sed -e "s/@POD_START_DELAY_MS@/$POD_START_DELAY_MS/g" -e "s/@POD_START_MAX_MS@/$max/g"
}

# Node objects from the spec file. status is accepted on create, and kwok's node-initialize
# stage keeps capacity/allocatable/addresses that are already there.
render_nodes() {
  [[ -f "$NODES_FILE" ]] || die "node spec file not found: $NODES_FILE"
  local name gpus product cpu mem cidr ip extra n=0
  while read -r name gpus product cpu mem cidr ip extra; do
    [[ -z "$name" || "$name" == \#* ]] && continue
    [[ -n "$ip" && -z "$extra" ]] || die "$NODES_FILE: bad line for '$name' (want: NAME GPUS PRODUCT CPU MEMORY POD_CIDR NODE_IP)"
    if ! in_loopback "$cidr" || [[ "$cidr" != */* ]]; then
      die "$NODES_FILE: $name: POD_CIDR $cidr is not inside 127.0.0.0/8"
    fi
    if ! in_loopback "$ip" || [[ "$ip" == */* ]]; then
      die "$NODES_FILE: $name: NODE_IP $ip is not an address inside 127.0.0.0/8"
    fi
    n=$((n + 1))
    cat <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: $name
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    type: kwok
    kubernetes.io/hostname: $name
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    nvidia.com/gpu.present: "true"
    nvidia.com/gpu.count: "$gpus"
    nvidia.com/gpu.product: $product
spec:
  podCIDR: $cidr
  podCIDRs: [$cidr]
status:
  addresses:
  - { type: InternalIP, address: $ip }
  - { type: Hostname, address: $name }
  capacity: { cpu: "$cpu", memory: $mem, pods: "110", ephemeral-storage: 1Ti, nvidia.com/gpu: "$gpus" }
  allocatable: { cpu: "$cpu", memory: $mem, pods: "110", ephemeral-storage: 1Ti, nvidia.com/gpu: "$gpus" }
EOF
  done <"$NODES_FILE"
  ((n > 0)) || die "$NODES_FILE lists no nodes"
}

# PIDs of the processes kwokctl started (from its pid files), for a last-resort cleanup.
started_pids() {
  local f pid
  for f in "$CLUSTER_DIR"/pids/*.pid; do
    [[ -f "$f" ]] || continue
    pid="$(tr -dc '0-9' <"$f")"
    [[ -n "$pid" ]] && echo "$pid"
  done
}

# Only a PID whose executable lives in our bin dir is ours (guards against PID reuse).
ours() {
  local exe
  exe="$(readlink "/proc/$1/exe" 2>/dev/null)" || return 1
  [[ "$exe" == "$BIN"/* || "$exe" == "$CLUSTER_DIR"/bin/* ]]
}

cmd_down() {
  local pids=() pid
  mapfile -t pids < <(started_pids)
  if [[ -x "$BIN/kwokctl" && -d "$CLUSTER_DIR" ]]; then
    log "down: kwokctl delete cluster"
    kwokctl delete cluster --name "$CLUSTER_NAME" --kubeconfig "$KUBECONFIG_PATH" >>"$STATE/down.log" 2>&1 ||
      log "down: kwokctl delete failed (see $STATE/down.log); stopping recorded PIDs"
  fi
  for pid in "${pids[@]}"; do
    if ours "$pid"; then
      log "down: stopping leftover pid $pid ($(readlink "/proc/$pid/exe"))"
      kill "$pid" 2>/dev/null || true
    fi
  done
  for _ in $(seq 50); do
    local alive=0
    for pid in "${pids[@]}"; do ours "$pid" && alive=1; done
    ((alive)) || break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do
    if ours "$pid"; then kill -9 "$pid" 2>/dev/null || true; fi
  done
  rm -rf "$KWOK_WORKDIR_PATH" "$KUBECACHEDIR" "$STATE/helm" "$KUBECONFIG_PATH" "$STATE/kwok.yaml" "$STATE/nodes.yaml" \
    "$STATE/up.log" "$STATE/down.log"
  rmdir "$STATE" 2>/dev/null || true
  log "down: stopped, state removed"
}

# EXIT trap while `up` runs: whatever failed (or was interrupted), stop what was started.
up_failed() {
  local rc=$?
  trap - EXIT
  exec 1>&3 2>&4
  log "up: failed (exit $rc), tearing down; component logs kept in ${STATE#"$REPO"/}/failed-logs/"
  rm -rf "$STATE/failed-logs"
  mkdir -p "$STATE/failed-logs"
  cp -r "$CLUSTER_DIR/logs/." "$STATE/failed-logs/" 2>/dev/null || true
  cp "$STATE/up.log" "$STATE/kwok.yaml" "$STATE/failed-logs/" 2>/dev/null || true
  cmd_down
  exit "$rc"
}

cmd_up() {
  if is_up; then
    log "up: already up (KUBECONFIG=$KUBECONFIG_PATH); '$0 down' to stop it"
    return 0
  fi
  if [[ -d "$CLUSTER_DIR" || -e "$KUBECONFIG_PATH" ]]; then
    log "up: stale state in $STATE (not responding), cleaning up first"
    cmd_down
  fi
  cmd_build
  check_ports
  local t0
  t0="$(now)"
  mkdir -p "$STATE"
  rm -rf "$STATE/failed-logs"
  trap up_failed EXIT
  render_config >"$STATE/kwok.yaml"
  render_nodes >"$STATE/nodes.yaml"
  log "up: starting etcd, kube-apiserver (127.0.0.1:$APISERVER_PORT), kube-controller-manager, kube-scheduler, kwok ..."
  kwokctl create cluster --name "$CLUSTER_NAME" --config "$STATE/kwok.yaml" --runtime binary \
    --kubeconfig "$KUBECONFIG_PATH" --wait "${UP_TIMEOUT}s" --timeout "${UP_TIMEOUT}s" \
    >"$STATE/up.log" 2>&1 || { cat "$STATE/up.log" >&2; false; }
  # kwokctl only logs (exit 0) when its --wait runs out: check /readyz ourselves.
  local _
  for _ in $(seq "$((UP_TIMEOUT * 5))"); do
    kctl get --raw /readyz --request-timeout=2s >/dev/null 2>&1 && break
    sleep 0.2
  done
  kctl get --raw /readyz --request-timeout=5s >/dev/null ||
    die "kube-apiserver not ready after ${UP_TIMEOUT}s (see ${STATE#"$REPO"/}/failed-logs/)"
  # Self-contained kubeconfig (certificates embedded rather than paths into the kwok workdir).
  "$BIN/kubectl" --kubeconfig "$KUBECONFIG_PATH" config view --flatten --minify >"$STATE/kubeconfig.tmp"
  mv -f "$STATE/kubeconfig.tmp" "$KUBECONFIG_PATH"
  chmod 600 "$KUBECONFIG_PATH"
  log "up: control plane ready after $(elapsed "$t0")s; registering nodes from ${NODES_FILE#"$REPO"/}"
  kctl create -f "$STATE/nodes.yaml" >/dev/null
  kctl wait --for=condition=Ready node --all --timeout="${UP_TIMEOUT}s" >/dev/null
  # The node lifecycle controller removes the not-ready taint shortly after Ready.
  for _ in $(seq "$((UP_TIMEOUT * 5))"); do
    [[ -z "$(kctl get nodes -o jsonpath='{.items[*].spec.taints}')" ]] && break
    sleep 0.2
  done
  # The service account controller (kube-controller-manager) creates "default" in each
  # namespace; pods are refused until it exists.
  for _ in $(seq "$((UP_TIMEOUT * 5))"); do
    kctl -n default get serviceaccount default >/dev/null 2>&1 && break
    sleep 0.2
  done
  kctl -n default get serviceaccount default >/dev/null
  trap - EXIT
  log "up: cluster up in $(elapsed "$t0")s: $(kctl get nodes --no-headers | wc -l) GPU nodes; export KUBECONFIG=$KUBECONFIG_PATH"
}

cmd_status() {
  if is_up; then
    log "status: up (KUBECONFIG=$KUBECONFIG_PATH)"
    kctl get nodes -L nvidia.com/gpu.product -o wide
  else
    log "status: down"
    return 1
  fi
}

cmd_run() {
  [[ "${1:-}" == "--" ]] && shift
  (($# > 0)) || die "usage: $0 run -- CMD [ARGS...]"
  local rc=0
  if is_up; then
    log "run: reusing the cluster that is already up (left up afterwards)"
  else
    cmd_up # tears down by itself if it fails
    trap cmd_down EXIT
  fi
  KUBECONFIG="$KUBECONFIG_PATH" "$@" || rc=$?
  log "run: command exited with $rc"
  return "$rc"
}

cmd_smoke() {
  is_up || die "cluster is not up: run '$0 up' first (or '$0 run -- $0 smoke')"
  need_go
  # Same -trimpath/-tags/CGO as `build`, so the compiled client-go etc. come from the build cache.
  log "smoke: go test ./smoke (tests/cluster/k8s) against $KUBECONFIG_PATH"
  cd "$HERE/k8s"
  KUBECONFIG="$KUBECONFIG_PATH" GOTOOLCHAIN=local GOWORK=off GOFLAGS="-mod=readonly -buildvcs=false" \
    CGO_ENABLED=0 nice -n 19 go test -trimpath -tags selinux,notest -count=1 -v -timeout 10m ./smoke/ "$@"
}

# ---------------------------------------------------------------------------------------------

usage() {
  sed -n '2,/^# Docs:/p' "$0" | sed 's/^# \{0,1\}//'
}

# Make Ctrl-C / kill run the EXIT traps (teardown) instead of dying on the spot.
trap 'exit 130' INT
trap 'exit 143' TERM

main() {
  local sub="${1:-}"
  [[ $# -gt 0 ]] && shift
  case "$sub" in
    build) cmd_build "$@" ;;
    build-helm) cmd_build_helm "$@" ;;
    helm) cmd_helm "$@" ;;
    up) cmd_up "$@" ;;
    down) cmd_down "$@" ;;
    status) cmd_status "$@" ;;
    run) cmd_run "$@" ;;
    smoke) cmd_smoke "$@" ;;
    -h | --help | help | "") usage ;;
    *) usage; die "unknown subcommand: $sub" ;;
  esac
}

main "$@"
