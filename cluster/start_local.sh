#!/usr/bin/env bash
# cluster/start_local.sh [--port 6379] [--dashboard-port 8265] [--num-cpus N] [--num-gpus N]
#                        [--temp-dir DIR] [-- RAY_START_ARGS...]
#
# Starts a single-node Ray head bound to 127.0.0.1 (GCS, dashboard and the Jobs API stay on
# loopback), with the project's .venv first on its PATH (a job's `python` is the project's
# interpreter, whatever shell ran this), then prints the addresses and the `ray job submit`
# command to run next. Stop it with cluster/stop_local.sh.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: cluster/start_local.sh [--port PORT] [--dashboard-port PORT] [--num-cpus N] [--num-gpus N]
                              [--temp-dir DIR] [-- RAY_START_ARGS...]

Start a local Ray head on 127.0.0.1 for `ray job submit` (uses .venv/bin/ray when present).
With .venv present its bin/ goes first on the head's PATH, so the `python` of a job's
entrypoint is the project's interpreter (with ray, torch and the encoder installed) even
when the shell that runs this script has no venv activated.

  --port PORT            GCS port of the head (default 6379)
  --dashboard-port PORT  dashboard / Jobs API port (default 8265)
  --num-cpus N           CPUs Ray may use (default: all)
  --num-gpus N           GPUs Ray may use (default: all visible)
  --temp-dir DIR         Ray's session/log root (default /tmp/ray); give one per head to run
                         two heads, and to stop just this one (cluster/stop_local.sh --temp-dir)
  -- ARGS...             passed to `ray start` as they are (e.g. --dashboard-agent-listen-port
                         and --ray-client-server-port for a second head on the machine)
  -h, --help             show this help and exit

Exports RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, RAY_USAGE_STATS_ENABLED=0, HF_HUB_OFFLINE=1,
TRANSFORMERS_OFFLINE=1 and TOKENIZERS_PARALLELISM=false into the head (every worker inherits
them), and Serve's settings as `python -m serving.app` has them on a local Ray: HTTP through
HAProxy (RAY_SERVE_ENABLE_HA_PROXY=1 ...; a value you exported wins) with its stats and
metrics ports on 127.0.0.1 (RAY_SERVE_HAPROXY_BINARY_PATH, serving/loopback.py). Token auth: RAY_AUTH_MODE defaults to "disabled" (loopback only); clients must use the
same mode, so export RAY_AUTH_MODE=disabled where you run `ray job submit` -- otherwise a
~/.ray/auth_token file switches the client to token mode. Set RAY_AUTH_MODE=token here and
in the client to use token auth on both sides.
EOF
}

port=6379
dashboard_port=8265
temp_dir=""
extra=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        --port) port="${2:?--port needs a value}"; shift 2 ;;
        --dashboard-port) dashboard_port="${2:?--dashboard-port needs a value}"; shift 2 ;;
        --num-cpus|--num-gpus) extra+=("$1" "${2:?$1 needs a value}"); shift 2 ;;
        --temp-dir) temp_dir="${2:?--temp-dir needs a value}"; extra+=("$1" "$temp_dir"); shift 2 ;;
        --) shift; extra+=("$@"); break ;;
        *) echo "error: unknown option: $1" >&2; usage >&2; exit 2 ;;
    esac
done

# shellcheck source=lib/find_ray.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/find_ray.sh"

# Read by `ray start` and inherited by every Ray worker process of this head.
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 RAY_USAGE_STATS_ENABLED=0
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-disabled}"
# A job's entrypoint runs `python` from the head's PATH: the project's, not whatever python
# the calling shell happens to have (which may lack ray and everything else).
if [[ -x "$repo/.venv/bin/python" ]]; then
    export PATH="$repo/.venv/bin:$PATH"
else
    echo "warning: no $repo/.venv: jobs run the python on this shell's PATH" \
         "($(command -v python || echo none)), which must have the project installed" >&2
fi
# Serve on this head as `python -m serving.app` serves on a local Ray: HTTP through HAProxy
# (serving.config.SERVE_START_ENV; a value already exported wins) and HAProxy's stats and
# metrics ports on 127.0.0.1, not every interface (serving.loopback). Read by the Serve
# controller a job starts, so it must be in the head's environment.
if serve_env=$(cd "$repo" && python - <<'PY'
import os
import shlex

from serving.config import SERVE_START_ENV
from serving.loopback import haproxy_env

env = {k: os.environ.get(k, v) for k, v in SERVE_START_ENV.items()}
env.update(haproxy_env("127.0.0.1"))
print("\n".join(f"export {k}={shlex.quote(v)}" for k, v in env.items()))
PY
); then
    eval "$serve_env"
else
    echo "warning: could not import serving.config: Serve jobs on this head use Serve's" \
         "defaults (its Python proxy)" >&2
fi

# In a session of its own the head's daemons form one process group, which is how
# stop_local.sh --temp-dir finds them (they inherit the caller's group otherwise).
launcher=()
if command -v setsid >/dev/null; then
    launcher=(setsid --wait)
fi
${launcher[@]+"${launcher[@]}"} "$ray_bin" start --head --node-ip-address 127.0.0.1 --port "$port" \
    --dashboard-host 127.0.0.1 --dashboard-port "$dashboard_port" --disable-usage-stats \
    ${extra[@]+"${extra[@]}"}

stop_args=""
if [[ -n "$temp_dir" ]]; then
    stop_args=" --temp-dir $temp_dir"
fi

cat <<EOF

ShopStream: Ray head on 127.0.0.1 (auth mode: $RAY_AUTH_MODE)
  RAY_ADDRESS for drivers (ray.init, --ray-address): 127.0.0.1:$port
  dashboard and Jobs API:                           http://127.0.0.1:$dashboard_port
  python of the jobs' entrypoints:                  $(command -v python || echo "none on PATH")

Next, from $repo:
  export RAY_AUTH_MODE=$RAY_AUTH_MODE
  $ray_bin job submit --address http://127.0.0.1:$dashboard_port --runtime-env cluster/runtime_env.yaml -- \\
      python -m training.incremental --source synthetic --num-workers 2 \\
      --store $repo/runs/store --storage-path $repo/runs/ray
  (jobs run in an uploaded copy of the repo: give local paths absolute)

Stop it with: cluster/stop_local.sh$stop_args
EOF
