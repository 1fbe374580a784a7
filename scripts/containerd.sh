#!/usr/bin/env bash
# A private containerd for tests, benchmarks and the quick start: everything under DIR, socket
# DIR/containerd.sock, the local busybox and pause images imported. Nothing touches system paths
# or the host's network: pods that are not on the host network get their own network namespace
# with loopback and an `eth0` whose other end stays inside the pod (a veth pair, both ends in the
# pod's namespace; CNI plugin `swiftedge-podnet` written below, addresses 10.99.0.0/16 counted
# under DIR) — reachable through the runtime (exec, port-forward), not from the host.
#   scripts/containerd.sh start DIR    # prints the socket path once containerd answers
#   scripts/containerd.sh stop DIR
# CONTAINERD_CNI=none at start: no CNI conflist is written (a stale one is removed), leaving DIR/cni
# for another component to fill (the plugins of /usr/lib/cni stay linked into DIR/cni-bin).
set -euo pipefail
cmd=${1:?start|stop}; dir=$(realpath -m "${2:?directory}")
here=$(cd "$(dirname "$0")" && pwd)
sock="$dir/containerd.sock"
case "$cmd" in
start)
  mkdir -p "$dir/cni" "$dir/cni-bin" "$dir/root" "$dir/state" "$dir/images"
  for plugin in /usr/lib/cni/*; do ln -sf "$plugin" "$dir/cni-bin/"; done
  cat > "$dir/cni-bin/swiftedge-podnet" <<PLUGIN
#!/bin/sh
# CNI plugin (spec 0.4.0): an eth0 that lives entirely inside the pod's network namespace.
case "\$CNI_COMMAND" in
ADD)
  cat > /dev/null
  n=\$(flock "$dir/podnet.lock" sh -c 'n=\$(cat "$dir/podnet.next" 2>/dev/null || echo 0); echo \$((n + 1)) > "$dir/podnet.next"; echo \$n')
  ip="10.99.\$((n / 250 % 250)).\$((n % 250 + 2))"
  nsenter --net="\$CNI_NETNS" sh -c "ip link add \$CNI_IFNAME type veth peer name \${CNI_IFNAME}-peer && ip addr add \$ip/16 dev \$CNI_IFNAME && ip link set \$CNI_IFNAME up && ip link set \${CNI_IFNAME}-peer up" >&2 || {
    echo '{"cniVersion": "0.4.0", "code": 999, "msg": "cannot create the pod interface"}'; exit 1; }
  printf '{"cniVersion": "0.4.0", "interfaces": [{"name": "%s", "sandbox": "%s"}], "ips": [{"version": "4", "address": "%s/16", "interface": 0}]}\n' "\$CNI_IFNAME" "\$CNI_NETNS" "\$ip"
  ;;
DEL|CHECK) cat > /dev/null ;;
VERSION) echo '{"cniVersion": "0.4.0", "supportedVersions": ["0.3.0", "0.3.1", "0.4.0"]}' ;;
esac
PLUGIN
  chmod +x "$dir/cni-bin/swiftedge-podnet"
  cat > "$dir/config.toml" <<TOML
version = 2
root = "$dir/root"
state = "$dir/state"
[grpc]
  address = "$sock"
[ttrpc]
  address = "$dir/containerd.sock.ttrpc"
[debug]
  address = "$dir/debug.sock"
  level = "${CONTAINERD_LOG_LEVEL:-info}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "docker.io/local/pause:1"
  netns_mounts_under_state_dir = true
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$dir/cni-bin"
    conf_dir = "$dir/cni"
TOML
  rm -f "$dir/cni/10-hostonly.conflist"
  if [ "${CONTAINERD_CNI:-}" = none ]; then
    # The pod network is someone else's to configure (an edge agent writing its own conflist into
    # DIR/cni, which containerd watches): none of ours, not even one left by an earlier start.
    rm -f "$dir/cni/10-podnet.conflist"
  else
    echo '{"cniVersion": "0.4.0", "name": "podnet", "plugins": [{"type": "swiftedge-podnet"}]}' > "$dir/cni/10-podnet.conflist"
  fi
  if [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; then echo "$sock"; exit 0; fi
  # Its own session: a Ctrl-C in the terminal must not stop containerd before `stop` has
  # killed the pods' containers through it (they would outlive it, re-parented to PID 1).
  setsid containerd --config "$dir/config.toml" > "$dir/containerd.log" 2>&1 < /dev/null &
  echo $! > "$dir/pid"
  for _ in $(seq 1 100); do
    ctr -a "$sock" version > /dev/null 2>&1 && break
    kill -0 "$(cat "$dir/pid")" 2>/dev/null || { echo "containerd exited; see $dir/containerd.log" >&2; tail -5 "$dir/containerd.log" >&2; exit 1; }
    sleep 0.1
  done
  ctr -a "$sock" version > /dev/null || { echo "containerd did not answer on $sock" >&2; exit 1; }
  for img in busybox pause; do
    tar="$dir/images/$img.tar"
    [ -f "$tar" ] || python3 "$here/build-image.py" --name "docker.io/local/$img:1" --out "$tar" $([ $img = pause ] && echo --pause)
    ctr -a "$sock" -n k8s.io image import "$tar" > /dev/null
  done
  echo "$sock"
  ;;
stop)
  # Pods first (tasks killed, containers removed), so no shim or mount outlives the runtime.
  if [ -S "$sock" ] && ctr -a "$sock" version > /dev/null 2>&1; then
    for t in $(ctr -a "$sock" -n k8s.io tasks ls -q 2>/dev/null); do ctr -a "$sock" -n k8s.io tasks kill -s SIGKILL "$t" > /dev/null 2>&1 || true; done
    for t in $(ctr -a "$sock" -n k8s.io tasks ls -q 2>/dev/null); do ctr -a "$sock" -n k8s.io tasks delete -f "$t" > /dev/null 2>&1 || true; done
    for c in $(ctr -a "$sock" -n k8s.io containers ls -q 2>/dev/null); do ctr -a "$sock" -n k8s.io containers delete "$c" > /dev/null 2>&1 || true; done
  fi
  if [ -f "$dir/pid" ]; then
    pid=$(cat "$dir/pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$dir/pid"
  fi
  # Whatever a shim still runs (containerd gone before the pods were stopped): the container
  # processes first, then the shims.
  for shim in $(pgrep -f "containerd-shim.* -address $sock" 2>/dev/null); do
    pkill -KILL -P "$shim" 2>/dev/null || true
  done
  pkill -KILL -f "containerd-shim.* -address $sock" 2>/dev/null || true
  # Sandbox /dev/shm mounts left by a runtime that was killed (usually none: grep finding nothing
  # must not fail the stop under pipefail).
  { grep -o " $dir/[^ ]*" /proc/mounts || true; } | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  ;;
*) echo "usage: $0 start|stop DIR" >&2; exit 2 ;;
esac
