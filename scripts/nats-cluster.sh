#!/usr/bin/env bash
# Starts or stops a three-node NATS JetStream cluster on loopback, idempotently:
#   bash scripts/nats-cluster.sh start   # nodes node-0..2, clients on 127.0.0.1:4231-4233
#   bash scripts/nats-cluster.sh stop
#   bash scripts/nats-cluster.sh status
# Each node has its own JetStream store under $CONVEYOR_STATE_DIR/nats-cluster/node-<i>
# (kept across stop and start), its log and pid file beside it; the nodes route to each
# other on 127.0.0.1:6231-6233 as cluster "conveyor". The nats-server binary is the one
# scripts/services.sh installs (run that first; it also records where it is).
# Driver replicas then take every client URL:
#   simple-runner serve --nats-url nats://127.0.0.1:4231,nats://127.0.0.1:4232,nats://127.0.0.1:4233
set -euo pipefail

STATE_DIR="${CONVEYOR_STATE_DIR:-/tmp/conveyor-services}"
DIR="$STATE_DIR/nats-cluster"
CLIENT_BASE="${CONVEYOR_CLUSTER_CLIENT_PORT:-4231}"
ROUTE_BASE="${CONVEYOR_CLUSTER_ROUTE_PORT:-6231}"
CLUSTER_NAME="${CONVEYOR_CLUSTER_NAME:-conveyor}"
NODES=3

say() { printf '[nats-cluster] %s\n' "$*"; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
client_port() { echo $((CLIENT_BASE + $1)); }
route_port() { echo $((ROUTE_BASE + $1)); }
node_pid() { # the pid of node $1 if it runs
  local file="$DIR/node-$1.pid"
  [ -f "$file" ] && kill -0 "$(cat "$file")" 2>/dev/null && cat "$file"
}

find_nats_server() {
  local candidate
  for candidate in "${CONVEYOR_NATS_SERVER:-}" "$(command -v nats-server 2>/dev/null || true)" \
    "$(cat "$STATE_DIR/nats-server.path" 2>/dev/null || true)"; do
    if [ -n "$candidate" ] && [ -x "$candidate" ]; then
      echo "$candidate"
      return 0
    fi
  done
  return 1
}

urls() {
  local i list=()
  for i in $(seq 0 $((NODES - 1))); do list+=("nats://127.0.0.1:$(client_port "$i")"); done
  local IFS=,
  echo "${list[*]}"
}

start() {
  local bin i j routes
  bin=$(find_nats_server) || { say "ERROR: no nats-server found: run bash scripts/services.sh first"; exit 1; }
  mkdir -p "$DIR"
  for i in $(seq 0 $((NODES - 1))); do
    if node_pid "$i" >/dev/null; then
      say "node-$i already running (client port $(client_port "$i"))"
      continue
    fi
    if port_open "$(client_port "$i")"; then
      say "ERROR: 127.0.0.1:$(client_port "$i") is taken by another process"
      exit 1
    fi
    routes=()
    for j in $(seq 0 $((NODES - 1))); do
      [ "$j" = "$i" ] || routes+=("nats://127.0.0.1:$(route_port "$j")")
    done
    mkdir -p "$DIR/node-$i"
    nohup "$bin" -js -a 127.0.0.1 -p "$(client_port "$i")" -sd "$DIR/node-$i" \
      --name "node-$i" --cluster_name "$CLUSTER_NAME" \
      --cluster "nats://127.0.0.1:$(route_port "$i")" --routes "$(IFS=,; echo "${routes[*]}")" \
      -P "$DIR/node-$i.pid" > "$DIR/node-$i.log" 2>&1 &
  done
  for i in $(seq 0 $((NODES - 1))); do
    for _ in $(seq 150); do
      port_open "$(client_port "$i")" && break
      sleep 0.1
    done
    port_open "$(client_port "$i")" || { say "ERROR: node-$i did not come up; see $DIR/node-$i.log"; exit 1; }
  done
  # Streams can be created once the nodes have elected a JetStream metadata leader.
  for _ in $(seq 300); do
    grep -qsE 'new (JetStream cluster )?metadata leader' "$DIR"/node-*.log && break
    sleep 0.1
  done
  grep -qsE 'new (JetStream cluster )?metadata leader' "$DIR"/node-*.log ||
    { say "ERROR: the nodes elected no JetStream leader in 30s; see $DIR/node-*.log"; exit 1; }
  say "cluster $CLUSTER_NAME up: $(urls) (logs: $DIR/node-*.log)"
}

stop() {
  local i pid
  for i in $(seq 0 $((NODES - 1))); do
    if pid=$(node_pid "$i"); then
      kill "$pid"
      for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
      done
      say "node-$i stopped"
    fi
    rm -f "$DIR/node-$i.pid"
  done
}

status() {
  local i pid
  for i in $(seq 0 $((NODES - 1))); do
    if pid=$(node_pid "$i"); then
      say "node-$i running (pid $pid, nats://127.0.0.1:$(client_port "$i"))"
    else
      say "node-$i stopped"
    fi
  done
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  urls) urls ;;
  *)
    echo "usage: $0 start|stop|status|urls" >&2
    exit 2
    ;;
esac
