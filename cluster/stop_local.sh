#!/usr/bin/env bash
# cluster/stop_local.sh [--force]
#
# Stops the local Ray head started by cluster/start_local.sh (uses .venv/bin/ray when present).
set -euo pipefail

usage() {
    cat <<'EOF'
usage: cluster/stop_local.sh [--force]

Stop the local Ray started by cluster/start_local.sh. Note: `ray stop` stops every Ray
process this user runs on this machine, not only that head.

  -f, --force   SIGKILL instead of SIGTERM
  -h, --help    show this help and exit
EOF
}

args=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        -f|--force) args+=(--force); shift ;;
        *) echo "error: unknown option: $1" >&2; usage >&2; exit 2 ;;
    esac
done

# shellcheck source=lib/find_ray.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/find_ray.sh"

export RAY_USAGE_STATS_ENABLED=0
"$ray_bin" stop ${args[@]+"${args[@]}"}
echo "ShopStream: local Ray stopped"
