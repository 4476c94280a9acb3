#!/usr/bin/env bash
# cluster/stop_local.sh [--temp-dir DIR] [--force]
#
# Stops the local Ray head started by cluster/start_local.sh: with --temp-dir only the
# processes of the head started with that temp dir (by PID), else `ray stop` (every Ray
# process of this user on the machine). Uses .venv/bin/ray when present.
set -euo pipefail

usage() {
    cat <<'USAGE'
usage: cluster/stop_local.sh [--temp-dir DIR] [--force]

Stop the local Ray started by cluster/start_local.sh.

  --temp-dir DIR  stop only the head started with `start_local.sh --temp-dir DIR`: its
                  processes (GCS, raylet, dashboard, workers, jobs) are found by their
                  session directory under DIR and signalled by PID; other Ray clusters on
                  the machine keep running
  -f, --force     SIGKILL at once instead of SIGTERM (then SIGKILL after 15 s)
  -h, --help      show this help and exit

Without --temp-dir this runs `ray stop`, which stops every Ray process this user runs on
this machine, not only that head.
USAGE
}

temp_dir=""
force=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        -f|--force) force=1; shift ;;
        --temp-dir) temp_dir="${2:?--temp-dir needs a value}"; shift 2 ;;
        *) echo "error: unknown option: $1" >&2; usage >&2; exit 2 ;;
    esac
done

if [[ -n "$temp_dir" ]]; then
    # Every process of that head names its session directory, DIR/session_<date>_<pid>; this
    # script's own command line names only DIR.
    pattern="${temp_dir%/}/session_"
    pids() { pgrep -f -- "$pattern" || true; }
    signal=TERM
    [[ $force == 1 ]] && signal=KILL
    found="$(pids)"
    [[ -n "$found" ]] && kill "-$signal" $found 2>/dev/null || true
    for _ in $(seq 150); do
        [[ -z "$(pids)" ]] && break
        sleep 0.1
    done
    left="$(pids)"
    [[ -n "$left" ]] && kill -KILL $left 2>/dev/null || true
    echo "ShopStream: local Ray head under $temp_dir stopped ($(echo $found | wc -w) processes)"
    exit 0
fi

# shellcheck source=lib/find_ray.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/find_ray.sh"

export RAY_USAGE_STATS_ENABLED=0
args=()
[[ $force == 1 ]] && args+=(--force)
"$ray_bin" stop ${args[@]+"${args[@]}"}
echo "ShopStream: local Ray stopped"
