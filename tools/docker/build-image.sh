#!/usr/bin/env bash
# Builds the `bftd:local` image FROM scratch: the bftd and bftctl binaries plus the shared
# libraries they link (found with ldd), so no base image has to be pulled from a registry.
#
# usage: tools/docker/build-image.sh [BIN_DIR]   (default: target/release, built if missing)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bin_dir="${1:-$root/target/release}"
tag="${BFTD_IMAGE:-bftd:local}"
if [[ $# -eq 0 ]]; then
    (cd "$root" && cargo build --release --bin bftd --bin bftctl)
fi
for b in bftd bftctl; do
    [[ -x "$bin_dir/$b" ]] || { echo "build-image: $bin_dir/$b not found" >&2; exit 1; }
done
ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/rootfs/usr/local/bin" "$ctx/rootfs/tmp"
cp "$bin_dir/bftd" "$bin_dir/bftctl" "$ctx/rootfs/usr/local/bin/"
# Every library the binaries need, at the path the dynamic loader will look for it.
libs() { ldd "$1" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'; }
for lib in $( (libs "$bin_dir/bftd"; libs "$bin_dir/bftctl") | sort -u); do
    mkdir -p "$ctx/rootfs$(dirname "$lib")"
    cp -L "$lib" "$ctx/rootfs$lib"
done
cp "$here/Dockerfile" "$ctx/Dockerfile"
docker build -q -t "$tag" "$ctx" >/dev/null
echo "built image $tag"
