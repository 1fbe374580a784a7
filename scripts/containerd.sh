#!/usr/bin/env bash
# A private containerd for tests, benchmarks and the quick start: everything under DIR, socket
# DIR/containerd.sock, host-network pods only (loopback CNI), the local busybox and pause images
# imported. Nothing touches system paths.
#   scripts/containerd.sh start DIR    # prints the socket path once containerd answers
#   scripts/containerd.sh stop DIR
set -euo pipefail
cmd=${1:?start|stop}; dir=$(realpath -m "${2:?directory}")
here=$(cd "$(dirname "$0")" && pwd)
sock="$dir/containerd.sock"
case "$cmd" in
start)
  mkdir -p "$dir/cni" "$dir/root" "$dir/state" "$dir/images"
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
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "docker.io/local/pause:1"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$dir/cni"
TOML
  echo '{"cniVersion": "0.4.0", "name": "hostonly", "plugins": [{"type": "loopback"}]}' > "$dir/cni/10-hostonly.conflist"
  if [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; then echo "$sock"; exit 0; fi
  containerd --config "$dir/config.toml" > "$dir/containerd.log" 2>&1 &
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
  pkill -f "containerd-shim.* -address $sock" 2>/dev/null || true
  # Sandbox /dev/shm mounts left by a runtime that was killed.
  grep -o " $dir/[^ ]*" /proc/mounts | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  ;;
*) echo "usage: $0 start|stop DIR" >&2; exit 2 ;;
esac
