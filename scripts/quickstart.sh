#!/usr/bin/env bash
# Quick start: installs what is needed, builds SwiftEdge (release) and runs the main job on this
# machine: the cloud (embedded Kubernetes-compatible API server, control plane, CloudHub :10000,
# certificate service :10002, metrics :9091) and one edge node, `edge-1`, joined to it with a token,
# running its pods on a private containerd (data under ./run/containerd; images built locally).
# Data lives in ./run (override with SWIFTEDGE_DATA=/path); Ctrl-C stops both; running the script
# again continues where it left off (the node keeps its certificate and its database).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "== installing system packages (libsqlite3-dev, containerd, runc, CNI plugins, busybox-static)"
  DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends libsqlite3-dev ca-certificates \
    containerd runc containernetworking-plugins busybox-static zlib1g-dev pkg-config mosquitto mosquitto-clients \
    python3-pip procps >/dev/null
fi
# The Modbus device simulator the device step below runs (tests/e2e/modbus_sim.py) needs pymodbus.
if ! python3 -c "import pymodbus" 2>/dev/null; then
  echo "== installing the Modbus simulator's Python package (pymodbus)"
  python3 -m pip install -q "pymodbus==3.16.1" 2>/dev/null || python3 -m pip install -q --break-system-packages "pymodbus==3.16.1"
fi
echo "== building swiftedge (release; the first build takes several minutes)"
swift build -c release --static-swift-stdlib --product swiftedge $(bash scripts/release-flags.sh)
BIN="$PWD/.build/release/swiftedge"
DATA="${SWIFTEDGE_DATA:-$PWD/run}"
mkdir -p "$DATA/cloud" "$DATA/edge-1"

pids=()
# Stopping leaves nothing behind: the processes, containerd, and the CSI volumes' bind mounts
# under $DATA (the pods are gone with containerd; the volumes' data stays in $DATA/edge-1/storage).
unmount_all() { awk -v d="$(realpath "$DATA")/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r | while read -r m; do umount -l "$m" || true; done; }
stop() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait; bash scripts/containerd.sh stop "$DATA/containerd"; unmount_all; }
trap stop INT TERM EXIT

wait_for_line() {  # file, text, seconds
  for _ in $(seq 1 $(( $3 * 10 ))); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "timed out waiting for \"$2\" in $1:"; tail -20 "$1"; exit 1
}

echo "== starting the cloud (log: $DATA/cloud.log)"
: > "$DATA/cloud.log"
"$BIN" cloud --data-dir "$DATA/cloud" >>"$DATA/cloud.log" 2>&1 &
pids+=($!)
wait_for_line "$DATA/cloud.log" "CloudHub listening on" 120
KUBECONFIG_FILE="$DATA/cloud/admin.kubeconfig"

MQTT_ARGS=(--mqtt-server "")
if command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ]; then
  echo "== starting an MQTT broker for the node's EventBus (mosquitto on 127.0.0.1:1884; log: $DATA/mosquitto.log)"
  printf 'listener 1884 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest stderr\n' > "$DATA/mosquitto.conf"
  "$(command -v mosquitto || echo /usr/sbin/mosquitto)" -c "$DATA/mosquitto.conf" >"$DATA/mosquitto.log" 2>&1 &
  pids+=($!)
  MQTT_ARGS=(--mqtt-server tcp://127.0.0.1:1884)
fi

echo "== starting containerd (private: $DATA/containerd)"
SOCK="$(bash scripts/containerd.sh start "$DATA/containerd")"

echo "== joining edge node edge-1 (log: $DATA/edge-1.log)"
TOKEN="$("$BIN" gettoken --kubeconfig "$KUBECONFIG_FILE")"
: > "$DATA/edge-1.log"
"$BIN" edge --cloud 127.0.0.1 --node-name edge-1 --token "$TOKEN" --data-dir "$DATA/edge-1" \
  --remote-runtime-endpoint "unix://$SOCK" --pod-logs-dir "$DATA/edge-1/logs" "${MQTT_ARGS[@]}" \
  --dmi-sock "$DATA/edge-1/dmi.sock" >>"$DATA/edge-1.log" 2>&1 &
pids+=($!)
wait_for_line "$DATA/edge-1.log" "connected to the cloud" 60

echo "== starting the Modbus mapper (log: $DATA/mapper-modbus.log)"
"$BIN" mapper modbus --dmi-sock "$DATA/edge-1/dmi.sock" --socket "$DATA/edge-1/modbus.sock" >"$DATA/mapper-modbus.log" 2>&1 &
pids+=($!)
if command -v kubectl >/dev/null; then
  KUBECONFIG="$KUBECONFIG_FILE" kubectl wait --for=condition=Ready node/edge-1 --timeout=60s >/dev/null
  KUBECONFIG="$KUBECONFIG_FILE" kubectl get nodes -o wide
fi

cat <<MSG

SwiftEdge is running: cloud + edge node edge-1.
Try:  export KUBECONFIG=$KUBECONFIG_FILE
      kubectl get nodes -o wide
      kubectl create deployment web --image=docker.io/local/busybox:1 --replicas=2 -- sh -c 'while true; do sleep 1; done'
      kubectl patch deployment web -p '{"spec":{"template":{"spec":{"terminationGracePeriodSeconds":2,"nodeSelector":{"node-role.kubernetes.io/edge":""}}}}}'
      kubectl get pods -o wide          # Running on edge-1 (containerd: ctr -a $SOCK -n k8s.io tasks ls)
      kubectl logs -f deploy/web        # logs, exec, attach and top reach edge pods through the stream tunnel
      kubectl exec -it deploy/web -- sh
      kubectl top nodes; kubectl top pods
Images here are local (no registry): docker.io/local/busybox:1 and docker.io/local/pause:1.
Devices (MQTT on 127.0.0.1:1884, a Modbus mapper registered over DMI): see examples/devices/thermostat.yaml
      python3 tests/e2e/modbus_sim.py --port 5020 &  then  kubectl apply -f examples/devices/thermostat.yaml
      kubectl get devicestatus thermo-1 -o yaml
Pods keep running when the edge agent stops; the next start adopts them.
Join more nodes:  $BIN gettoken --kubeconfig $KUBECONFIG_FILE
                  $BIN edge --cloud 127.0.0.1 --node-name <name> --token <token> --data-dir <dir> --metrics-port 0 --metaserver-port 0
Installing for real (systemd units, /etc/kubeedge):  swiftedge init   on the cloud,   swiftedge join   on each edge machine
Metrics: curl http://127.0.0.1:9091/metrics      Stop: Ctrl-C
MSG
wait
