#!/usr/bin/env bash
# The library unit tests of each publishable crate, run from its package alone, as a
# packager runs them (crater, distributions: `cargo test` in the unpacked `.crate`).
#
#   bash scripts/package-tests.sh [conveyor-sdk.crate simple-runner.crate]
#
# Without arguments it packages the working tree first (`cargo package --no-verify`).
# Each package is unpacked outside the repository (a folder inside it would be taken for
# a member of the workspace) and tested with every feature and its own Cargo.lock;
# simple-runner against the unpacked conveyor-sdk, whose version is not on crates.io.
# Builds go to the repository's target folder, so that dependencies built for it are
# reused. The unit tests need nats-server and Docker: run scripts/services.sh first.
set -euo pipefail
crates=()
for crate in "$@"; do crates+=("$(realpath "$crate")"); done
set -- "${crates[@]}"
cd "$(dirname "$0")/.."
root=$(pwd)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"

if [ $# -eq 0 ]; then
  cargo package -p conveyor-sdk -p simple-runner --no-verify --allow-dirty --quiet
  version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
  set -- "$CARGO_TARGET_DIR/package/conveyor-sdk-$version.crate" \
    "$CARGO_TARGET_DIR/package/simple-runner-$version.crate"
fi
[ $# -eq 2 ] || { echo "usage: $0 [conveyor-sdk.crate simple-runner.crate]" >&2; exit 2; }

unpacked=$(mktemp -d)
trap 'rm -rf "$unpacked"' EXIT
# A package's files all carry the same old time, so cargo would take a build of an
# earlier package of the same version for fresh: they are unpacked as modified now.
tar -xzmf "$1" -C "$unpacked"
tar -xzmf "$2" -C "$unpacked"
sdk=$(find "$unpacked" -mindepth 1 -maxdepth 1 -type d -name 'conveyor-sdk-*' -print -quit)
runner=$(find "$unpacked" -mindepth 1 -maxdepth 1 -type d -name 'simple-runner-*' -print -quit)
for dir in "$sdk" "$runner"; do
  [ -f "$dir/Cargo.lock" ] || { echo "error: the package $(basename "$dir") has no Cargo.lock" >&2; exit 1; }
done

echo "package tests: $(basename "$sdk")"
(cd "$sdk" && cargo test --lib --all-features --locked)

echo "package tests: $(basename "$runner") (against the unpacked $(basename "$sdk"))"
# The patch turns conveyor-sdk's entry of the lock file into a path one (no source, no
# checksum); every other entry must stay as packaged.
patch=(--config "patch.crates-io.conveyor-sdk.path=\"$sdk\"")
without_sdk_source() {
  awk '/^name = / { sdk = ($0 == "name = \"conveyor-sdk\"") }
       sdk && /^(source|checksum) = / { next } { print }' "$1"
}
cp "$runner/Cargo.lock" "$unpacked/simple-runner.Cargo.lock"
(cd "$runner" && cargo metadata --format-version 1 "${patch[@]}" >/dev/null)
if ! diff <(without_sdk_source "$unpacked/simple-runner.Cargo.lock") \
  <(without_sdk_source "$runner/Cargo.lock"); then
  echo "error: simple-runner's packaged Cargo.lock does not hold against the packaged conveyor-sdk" >&2
  exit 1
fi
(cd "$runner" && cargo test --lib --all-features --locked "${patch[@]}")
