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
    # start_local.sh runs `ray start` in a session of its own, so the head's daemons share
    # one process group; the processes that name the session dir (DIR/session_<date>_<pid>)
    # identify it, the others (client server, agents) are found through the group, and the
    # workers (group leaders themselves) as descendants. Our own group is never included.
    own="$(ps -o pgid= -p $$ | tr -d ' ')"
    groups=""
    for pid in $(pgrep -f -- "${temp_dir%/}/session_" || true); do
        group="$(ps -o pgid= -p "$pid" | tr -d ' ')"
        [[ -n "$group" && "$group" != "$own" ]] && groups="$groups $group"
    done
    tree() {  # live PIDs in those groups, and their descendants
        [[ -z "${groups// /}" ]] && return 0
        ps -eo pid=,ppid=,pgid=,stat= | awk -v groups=" $groups " '
            { pid[NR] = $1; ppid[NR] = $2; stat[NR] = $4
              if (index(groups, " " $3 " ")) mark[$1] = 1 }
            END { do { changed = 0
                       for (i = 1; i <= NR; i++)
                           if (!(pid[i] in mark) && (ppid[i] in mark)) { mark[pid[i]] = 1; changed = 1 }
                     } while (changed)
                  for (i = 1; i <= NR; i++) if ((pid[i] in mark) && stat[i] !~ /^Z/) print pid[i] }'
    }
    alive() {  # the given PIDs that still run (zombies only wait to be reaped)
        ps -eo pid=,stat= | awk -v want=" $* " 'index(want, " " $1 " ") && $2 !~ /^Z/ {print $1}'
    }
    signal=TERM
    [[ $force == 1 ]] && signal=KILL
    # Taken before the first signal: a dead raylet's workers are re-parented.
    doomed="$(tree)"
    [[ -n "$doomed" ]] && kill "-$signal" $doomed 2>/dev/null || true
    for _ in $(seq 150); do
        [[ -z "$(alive $doomed)" ]] && break
        sleep 0.1
    done
    left="$(alive $doomed)"
    [[ -n "$left" ]] && kill -KILL $left 2>/dev/null || true
    echo "ShopStream: local Ray head under $temp_dir stopped ($(echo $doomed | wc -w) processes)"
    exit 0
fi

# shellcheck source=lib/find_ray.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/find_ray.sh"

export RAY_USAGE_STATS_ENABLED=0
args=()
[[ $force == 1 ]] && args+=(--force)
"$ray_bin" stop ${args[@]+"${args[@]}"}
echo "ShopStream: local Ray stopped"
