#!/usr/bin/env bash
# simple-runner's integration tests against Podman: every test binary, through Podman's
# Docker-compatible API (DOCKER_HOST), set up by `scripts/services.sh podman`, less the
# few tests below that prove what Docker does and Podman does not. scripts/test.sh runs
# the same tests against Docker. Ends with one line that adds up the results.
#
#   bash scripts/podman-tests.sh [cargo test options]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/services.sh podman
export DOCKER_HOST="unix://${CONVEYOR_PODMAN_SOCKET:-/run/podman/podman.sock}"
# The tests' engine() fails unless the engine at DOCKER_HOST is Podman: this pass
# cannot pass against Docker.
export CONVEYOR_TEST_ENGINE=podman
if ! podman --remote --url "$DOCKER_HOST" version --format '{{.Server.Version}}' >/dev/null; then
  echo "error: Podman does not answer on $DOCKER_HOST: run \`bash scripts/services.sh podman\`" >&2
  exit 1
fi

skips=(
  # Podman 4.3 does not report a container OOMKilled when the kernel kills its process
  # for memory: conmon 2.1.6 marks it in a file `oom` in its working directory, Podman
  # looks for that file in the container's. When the process is the container's shell,
  # the run says `the run's container was killed (exit code 137)`, not `killed for
  # memory`. (A step killed while the shell lives is reported as on Docker.)
  a_step_whose_memory_kills_the_containers_shell_is_reported_killed_for_memory
  # What the runner holds while it streams hundreds of MB between the engine's archive
  # endpoint and NATS does not depend on the engine: the Docker pass proves it, and
  # through Podman's slower archive endpoint these two alone would take minutes.
  a_500_mb_artifact_is_kept_and_fetched_with_under_64_mb_of_memory
  a_big_cache_streams_both_ways_without_the_runners_memory_growing_by_its_size
)
skip_args=()
for name in "${skips[@]}"; do skip_args+=(--skip "$name"); done

log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test -p simple-runner --all-features --no-fail-fast --test '*' "$@" -- --exact "${skip_args[@]}" 2>&1 | tee "$log" ||
  status=$?
awk '/^test result:/ {
       for (i = 1; i <= NF; i++) {
         if ($(i+1) ~ /^passed;?$/) p += $i
         if ($(i+1) ~ /^failed;?$/) f += $i
         if ($(i+1) ~ /^filtered$/) s += $i
       }
     }
     END {
       printf "total on Podman: %d passed, %d failed, %d skipped\n", p, f, s
       if (p == 0) { print "error: no test ran against Podman" > "/dev/stderr"; exit 1 }
     }' "$log" || status=1
exit "$status"
