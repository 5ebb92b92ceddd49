#!/usr/bin/env bash
# The test command: starts what the tests need (scripts/services.sh), then runs every
# test of the workspace: unit, integration (real nats-server and Docker) and doc tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/services.sh
cargo test --workspace --all-features "$@"
