#!/usr/bin/env bash
# The test command: starts what the tests need (scripts/services.sh), then runs every
# test of the workspace: unit, integration (real nats-server and Docker) and doc tests.
# Ends with one line that adds up every test binary's result.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/services.sh
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --all-features "$@" 2>&1 | tee "$log" || status=$?
awk '/^test result:/ {
       for (i = 1; i <= NF; i++) {
         if ($(i+1) ~ /^passed;?$/) p += $i
         if ($(i+1) ~ /^failed;?$/) f += $i
         if ($(i+1) ~ /^ignored;?$/) s += $i
       }
     }
     END { printf "total: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
exit "$status"
