#!/usr/bin/env bash
# The docker localnet: 4 bftd containers on a private network.
#
# usage: tools/docker/localnet.sh up [DIR]     build the image, write configs to DIR
#                                              (default ./localnet) unless there, start
#        tools/docker/localnet.sh down [DIR]   stop and remove the containers (data stays)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cmd="${1:-}"
dir="$(realpath -m "${2:-./localnet}")"
export BFTD_LOCALNET_DIR="$dir"
compose=(docker-compose -p bftd-localnet -f "$here/docker-compose.yml")
case "$cmd" in
up)
    "$here/build-image.sh"
    if [[ ! -f "$dir/client.toml" ]]; then
        "$root/target/release/bftd" testnet --nodes 4 --dir "$dir" --base-port 7000 \
            --hosts 172.29.0.10,172.29.0.11,172.29.0.12,172.29.0.13 >/dev/null
    fi
    "${compose[@]}" up -d
    echo "localnet up; try: $root/target/release/bftctl --config $dir/client.toml status"
    ;;
down)
    "${compose[@]}" down
    ;;
*)
    echo "usage: $0 up|down [DIR]" >&2
    exit 2
    ;;
esac
