"""include/k8s/helm-values.yaml (official Airflow Helm chart 1.22.0) and include/k8s/Dockerfile.airflow, checked as
far as this machine allows: there is no helm binary, no chart archive, no network and no Kubernetes API here,
so nothing is rendered, linted or installed, and the chart's values.schema.json is not vendored (see
include/k8s/README.md, "What was checked"). What is checked:

- every chart key the file sets is one the chart has (CHART_KEYS, compared by hand with the chart's values.yaml);
- every ``config:`` option exists in Airflow 3.3.2's own configuration (core config.yml + the installed
  providers') and parses as its type through Airflow's config parser;
- the DAG bundle list loads through Airflow's DagBundlesManager; the OpenLineage transport builds an HTTP
  transport; the pools file goes through Airflow's own ``airflow pools import`` parser;
- the pool names are the ones the DAGs use, and the CPU pool's slots follow from the worker's cores and
  SYNTHCORPUS_CPU_THREADS;
- the Kubernetes-typed fragments (env, envFrom, volumes, mounts, resources, the pools ConfigMap) validate
  with kubernetes-validate (strict);
- paths, image tag and Airflow version agree between the values, the Dockerfile and requirements.lock;
- no secret value is in the file, and every Secret it names is created in the README.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from synthcorpus.spec.vocabulary import CPU_GENERATE_POOL, CPU_THREADS_ENV, GPU_GENERATE_POOL, STORAGE_ENV

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "include" / "k8s"
VALUES_FILE = K8S / "helm-values.yaml"
DOCKERFILE = K8S / "Dockerfile.airflow"
README = K8S / "README.md"

# The chart keys this file may set, each compared by hand with the chart's values.yaml (read through the
# search index at apache/airflow main 5f1ee0aea931bd3a221eab567f6ad724c587b43a, after helm-chart/1.22.0 and
# with the same default Airflow 3.2.2) and, for workers.celery.resources, with the 1.22.0 documentation. A path
# listed here is not descended into: its value is free-form (Kubernetes objects, airflow.cfg, templated
# strings). Adding a key to the values means checking it against the chart first, then adding it here.
CHART_KEYS = {
    "airflowVersion", "defaultAirflowRepository", "defaultAirflowTag",
    "images.airflow.repository", "images.airflow.tag", "images.airflow.pullPolicy",
    "executor",
    "fernetKeySecretName", "apiSecretKeySecretName", "jwtSecretName",
    "data.metadataSecretName", "postgresql.enabled", "redis.enabled",
    "env", "extraEnvFrom", "extraConfigMaps",
    "workers.replicas", "workers.env", "workers.celery.resources",
    "createUserJob.defaultUser.role", "createUserJob.defaultUser.username", "createUserJob.defaultUser.email",
    "createUserJob.defaultUser.firstName", "createUserJob.defaultUser.lastName",
    "createUserJob.args", "createUserJob.extraVolumes", "createUserJob.extraVolumeMounts",
    "config",
}
# Values that hold secrets in the chart: the file must leave every one unset (Secrets are named instead).
SECRET_VALUE_KEYS = (
    "fernetKey", "apiSecretKey", "jwtSecret", "webserverSecretKey", "data.metadataConnection",
    "data.resultBackendConnection", "data.brokerUrl", "redis.password", "createUserJob.defaultUser.password",
    "flower.password", "pgbouncer.ssl", "elasticsearch.connection", "opensearch.connection",
)
K8S_VERSION = "1.30"


def values() -> dict:
    return yaml.safe_load(VALUES_FILE.read_text())


def get(tree: dict, dotted: str):
    node = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def leaf_paths(tree: dict, prefix: str = "") -> list[str]:
    """Dotted paths of the values, stopping at CHART_KEYS entries and at non-mapping values."""
    paths = []
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if path in CHART_KEYS or not isinstance(value, dict):
            paths.append(path)
        else:
            paths += leaf_paths(value, path + ".")
    return paths


def env_value(env: list[dict], name: str) -> str:
    matches = [e["value"] for e in env if e["name"] == name]
    assert len(matches) == 1, f"expected one {name} in {env}"
    return matches[0]


def pools_configmap(v: dict) -> tuple[str, dict[str, str]]:
    """(name, data) of the extraConfigMaps entry holding pools.json; the chart takes `data` as a YAML string."""
    (name, cm), = [(n, c) for n, c in v["extraConfigMaps"].items() if "pools.json" in yaml.safe_load(c["data"])]
    return name, yaml.safe_load(cm["data"])


def pools(v: dict) -> dict:
    return json.loads(pools_configmap(v)[1]["pools.json"])


def mount_path(v: dict, *, configmap: str | None = None, secret: str | None = None) -> str:
    volumes = v["createUserJob"]["extraVolumes"]
    (volume,) = [
        vol["name"] for vol in volumes
        if (configmap and vol.get("configMap", {}).get("name") == configmap)
        or (secret and vol.get("secret", {}).get("secretName") == secret)
    ]
    (mount,) = [m["mountPath"] for m in v["createUserJob"]["extraVolumeMounts"] if m["name"] == volume]
    return mount


def job_script(v: dict) -> str:
    args = v["createUserJob"]["args"]
    assert args[:2] == ["bash", "-c"], args
    return args[2]


# Airflow is imported in a child process (as in tests/dags), with its own AIRFLOW_HOME: importing it here
# would configure logging and settings for every other test in the session.
PROBE = r"""
import inspect, json, os, sys, tempfile
from importlib.metadata import entry_points
from pathlib import Path

import yaml

inputs = json.loads(sys.argv[1])
out = {}

import airflow.config_templates
from airflow.configuration import conf

sections = yaml.safe_load((Path(airflow.config_templates.__file__).parent / "config.yml").read_text())
for ep in entry_points(group="apache_airflow_provider"):
    sections.update(ep.load()().get("config") or {})
known = {(s, o): meta for s, body in sections.items() for o, meta in (body.get("options") or {}).items()}
out["known"] = {f"{s}.{o}": (s, o) in known for s, o in inputs["probe_options"]}
out["unknown"], out["type_errors"] = [], []
getters = {"integer": conf.getint, "float": conf.getfloat, "boolean": conf.getboolean}
for section, opts in inputs["config"].items():
    for option, value in opts.items():
        if (section, option) not in known:
            out["unknown"].append(f"[{section}] {option}")
            continue
        env_name = f"AIRFLOW__{section.upper()}__{option.upper()}"
        os.environ[env_name] = str(value)
        meta = known[(section, option)]
        getter = getters.get(meta.get("type"))
        if getter is None and str(meta.get("default")) in ("True", "False"):
            getter = conf.getboolean  # declared as a string, read as a boolean
        try:
            if getter is not None:
                getter(section, option)
            assert conf.get(section, option) == str(value)
        except Exception as exc:
            out["type_errors"].append(f"[{section}] {option}: {exc}")
        finally:
            del os.environ[env_name]  # the steps below run on Airflow's defaults

from airflow.dag_processing.bundles.manager import DagBundlesManager

os.environ["AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST"] = json.dumps(inputs["bundles"])
try:
    manager = DagBundlesManager()
    out["bundles"] = {n: {"class": type(b := manager.get_bundle(n)).__module__ + "." + type(b).__name__, "path": str(b.path)}
                      for n in manager.get_all_bundle_names()}
except Exception as exc:
    out["bundles"] = {"error": f"{type(exc).__name__}: {exc}"}

# airflow pools import, with the API client (the metadata database) replaced
from airflow.cli.commands import pool_command

created = []


class Client:
    def create_pool(self, **kwargs):
        created.append(kwargs)
        return kwargs


pool_command.get_current_api_client = lambda: Client()
path = Path(tempfile.mkdtemp()) / "pools.json"
path.write_text(inputs["pools_json"])
try:
    imported, failed = pool_command.pool_import_helper(str(path))
    out["pools"] = {"imported": len(imported), "failed": failed, "created": created}
except BaseException as exc:
    out["pools"] = {"error": f"{type(exc).__name__}: {exc}"}

from openlineage.client.transport import get_default_factory
from openlineage.client.transport.http import HttpConfig

out["http_config_fields"] = sorted(inspect.signature(HttpConfig).parameters)
try:
    out["transport_class"] = type(get_default_factory().create(inputs["transport"])).__name__
except Exception as exc:
    out["transport_class"] = f"error: {exc}"
print(json.dumps(out))
"""


def bundle_list(v: dict) -> list[dict]:
    return json.loads(v["config"]["dag_processor"]["dag_bundle_config_list"])


def run_probe(v: dict, tmp: Path) -> dict:
    inputs = {
        "config": v["config"],
        "bundles": bundle_list(v),
        "pools_json": pools_configmap(v)[1]["pools.json"],
        "transport": json.loads(v["config"]["openlineage"]["transport"]),
        "probe_options": [["openlineage", "transport"], ["dag_processor", "dag_bundle_config_list"],
                          ["openlineage", "transports"], ["core", "dags_are_paused_at_create"]],
    }
    env = {k: val for k, val in os.environ.items() if not k.startswith("AIRFLOW__")}
    env.update(AIRFLOW_HOME=str(tmp), AIRFLOW__CORE__LOAD_EXAMPLES="False")
    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps(inputs)], capture_output=True, text=True,
                          env=env, cwd=tmp, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def probe(tmp_path_factory) -> dict:
    return run_probe(values(), tmp_path_factory.mktemp("airflow-home"))


# --- the file and the chart ---------------------------------------------------------------------------------


def test_values_parse_and_only_use_chart_keys():
    v = values()
    assert isinstance(v, dict) and v
    unknown = sorted(p for p in leaf_paths(v) if p not in CHART_KEYS)
    assert not unknown, f"not chart values (check them against chart 1.22.0's values.yaml first): {unknown}"


def test_leaf_paths_stop_at_chart_keys_and_catch_typos():
    # the walk itself: a misspelt key under a known section is reported, a free-form section is not descended
    tree = {
        "workers": {"replicas": 1, "replicaz": 2, "celery": {"resources": {"requests": {"cpu": "1"}}}},
        "config": {"x": {"y": 1}},
    }
    assert sorted(leaf_paths(tree)) == ["config", "workers.celery.resources", "workers.replicas", "workers.replicaz"]


def test_airflow_3_3_2_celery_and_external_postgres():
    v = values()
    assert v["airflowVersion"] == "3.3.2"
    assert v["executor"] == "CeleryExecutor"
    assert v["postgresql"]["enabled"] is False and v["data"]["metadataSecretName"]
    assert v["redis"]["enabled"] is True
    # the KubernetesExecutor alternative is spelled out in the comments
    assert re.search(r"^#\s+executor: KubernetesExecutor$", VALUES_FILE.read_text(), re.M)


def test_no_secret_values_in_the_file():
    v = values()
    present = [k for k in SECRET_VALUE_KEYS if get(v, k) is not None]
    assert not present, f"secret values must come from Secrets, not the values file: {present}"
    text = VALUES_FILE.read_text()
    assert not re.search(r"AKIA[0-9A-Z]{16}|hf_[A-Za-z0-9]{20,}|-----BEGIN [A-Z ]*PRIVATE KEY", text)
    # a literal after a password/secret/token key (the Secret *names* are not values)
    literal = re.compile(r"(?im)(password|secret|token)[ \t]*[:=][ \t]*['\"]?[A-Za-z0-9+/=_-]{8,}")
    assert not literal.search(text.replace("SecretName", ""))


def test_every_named_secret_is_created_in_the_readme():
    v = values()
    names = {v["fernetKeySecretName"], v["apiSecretKeySecretName"], v["jwtSecretName"], v["data"]["metadataSecretName"]}
    names |= {e["secretRef"]["name"] for e in yaml.safe_load(v["extraEnvFrom"]) if "secretRef" in e}
    names |= {vol["secret"]["secretName"] for vol in v["createUserJob"]["extraVolumes"] if "secret" in vol}
    created = set(re.findall(r"kubectl -n airflow create secret generic ([a-z0-9-]+)", README.read_text()))
    assert names <= created, f"Secrets named in the values but not created in the README: {sorted(names - created)}"
    assert len(names) == 6


# --- airflow.cfg ------------------------------------------------------------------------------------------


def test_config_options_exist_in_airflow_3_3_2_and_parse(probe):
    assert values()["config"], "expected airflow.cfg settings under config:"
    assert probe["unknown"] == [], f"not Airflow 3.3.2 options: {probe['unknown']}"
    assert probe["type_errors"] == []


def test_config_check_knows_real_options_and_rejects_others(probe):
    assert probe["known"] == {"openlineage.transport": True, "dag_processor.dag_bundle_config_list": True,
                              "openlineage.transports": False, "core.dags_are_paused_at_create": False}


def test_openlineage_http_transport_to_marquez(probe):
    ol = values()["config"]["openlineage"]
    assert ol["namespace"] == "synthcorpus"
    transport = json.loads(ol["transport"])
    assert transport["type"] == "http" and transport["endpoint"] == "api/v1/lineage"
    assert set(transport) - {"type"} <= set(probe["http_config_fields"])
    assert probe["transport_class"] == "HttpTransport"


def test_dag_bundle_loads_through_airflow(probe):
    assert probe["bundles"] == {
        "synthcorpus": {"class": "airflow.dag_processing.bundles.local.LocalDagBundle", "path": "/opt/airflow/dags"}
    }


# --- pools and the CPU threads ----------------------------------------------------------------------------


def test_pool_names_are_the_ones_the_dags_use():
    assert set(pools(values())) == {CPU_GENERATE_POOL, GPU_GENERATE_POOL}
    assert {CPU_GENERATE_POOL, GPU_GENERATE_POOL} == {"synthcorpus_cpu_generate", "synthcorpus_gpu_generate"}


def test_cpu_pool_slots_follow_from_worker_cores_and_threads():
    v = values()
    threads = int(env_value(v["workers"]["env"], CPU_THREADS_ENV))
    cores = int(v["workers"]["celery"]["resources"]["requests"]["cpu"])
    p = pools(v)
    assert threads >= 1 and cores >= threads
    assert p[CPU_GENERATE_POOL]["slots"] == v["workers"]["replicas"] * (cores // threads)
    # the pool is cluster-wide and Celery does not balance it per worker: one worker keeps the bound exact
    assert v["workers"]["replicas"] == 1


def test_gpu_pool_counts_deferred_pods():
    p = pools(values())
    assert p[GPU_GENERATE_POOL]["slots"] >= 1
    assert p[GPU_GENERATE_POOL]["include_deferred"] is True  # a deferred KubernetesPodOperator still holds its GPU
    assert p[CPU_GENERATE_POOL]["include_deferred"] is False


def test_pools_file_goes_through_airflow_pools_import(probe):
    result = probe["pools"]
    assert result.get("failed") == [] and result["imported"] == 2, result
    by_name = {c["name"]: c for c in result["created"]}
    assert set(by_name) == {CPU_GENERATE_POOL, GPU_GENERATE_POOL}
    assert by_name[GPU_GENERATE_POOL]["include_deferred"] is True
    assert all(isinstance(c["slots"], int) and c["slots"] >= 1 and c["description"] for c in by_name.values())


def test_hook_job_imports_the_mounted_pools_and_reads_the_password_from_the_secret():
    v = values()
    script = job_script(v)
    name, data = pools_configmap(v)
    assert "pools.json" in data
    pools_file = f"{mount_path(v, configmap=name)}/pools.json"
    lines = [shlex.split(line.rstrip("\\")) for line in script.splitlines()]
    assert ["airflow", "pools", "import", pools_file] in lines
    admin = next(vol["secret"]["secretName"] for vol in v["createUserJob"]["extraVolumes"] if "secret" in vol)
    assert f'--password "$(cat {mount_path(v, secret=admin)}/password)"' in script
    assert script.index("pools import") < script.index("users create")
    assert script.startswith("set -euo pipefail")


# --- Kubernetes objects -----------------------------------------------------------------------------------


def test_kubernetes_fragments_validate():
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    v = values()
    job = v["createUserJob"]
    container = {
        "name": "fragments",
        "image": f"{v['images']['airflow']['repository'].lower()}:{v['images']['airflow']['tag']}",
        "imagePullPolicy": v["images"]["airflow"]["pullPolicy"],
        "args": job["args"],
        "env": v["env"] + v["workers"]["env"],
        "envFrom": yaml.safe_load(v["extraEnvFrom"]),
        "resources": v["workers"]["celery"]["resources"],
        "volumeMounts": job["extraVolumeMounts"],
    }
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "helm-values-fragments"},
        "spec": {"restartPolicy": "OnFailure", "containers": [container], "volumes": job["extraVolumes"]},
    }
    assert kubernetes_validate.validate(pod, desired_version=K8S_VERSION, strict=True)
    name, data = pools_configmap(v)
    configmap = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}
    assert kubernetes_validate.validate(configmap, desired_version=K8S_VERSION, strict=True)
    broken = {**pod, "spec": {**pod["spec"], "volumes": [{"name": "x", "configMap": {"nmae": name}}]}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, desired_version=K8S_VERSION, strict=True)


# --- the image --------------------------------------------------------------------------------------------


def dockerfile() -> str:
    return DOCKERFILE.read_text()


def test_image_matches_airflow_version_and_lock():
    v = values()
    base = re.search(r"^ARG AIRFLOW_IMAGE=apache/airflow:(\S+)$", dockerfile(), re.M).group(1)
    assert base == v["defaultAirflowTag"] == f"{v['airflowVersion']}-python3.11"
    lock = (ROOT / "requirements.lock").read_text()
    assert f"apache-airflow=={v['airflowVersion']}\n" in lock and f"apache-airflow-core=={v['airflowVersion']}\n" in lock
    assert "python3.11" in lock.splitlines()[0].lower().replace(" ", "")  # the lock is the Python 3.11 set


def test_image_installs_the_lock_then_the_package_without_deps():
    text = dockerfile()
    lock = text.index("-r /opt/synthcorpus/requirements.lock")
    package = text.index("pip install --no-deps /opt/synthcorpus")
    assert lock < package < re.search(r"^\s+pip check$", text, re.M).start()
    makefile_model = re.search(r"^SMOLLM2 := (\S+)$", (ROOT / "Makefile").read_text(), re.M).group(1)
    assert f"ARG SMOLLM2={makefile_model}\n" in text


def test_bundle_and_corpora_paths_are_where_the_image_puts_them():
    v = values()
    copies = dict(re.findall(r"^COPY --chown=airflow:0 (dags|include|plugins) (\S+)$", dockerfile(), re.M))
    assert set(copies) == {"dags", "include", "plugins"}
    (bundle,) = bundle_list(v)
    assert bundle["kwargs"]["path"] == copies["dags"]
    assert env_value(v["env"], "SYNTHCORPUS_CORPORA_DIR") == f"{copies['include']}/corpora"
    # the DAG factory's own default (include/ beside dags/) points at the same folder
    assert Path(copies["dags"]).parent / "include" == Path(copies["include"])
    assert (ROOT / "include" / "corpora").is_dir() and list((ROOT / "include" / "corpora").glob("*.yaml"))


def test_storage_is_s3():
    assert env_value(values()["env"], STORAGE_ENV).startswith("s3://")


def test_every_llama_cpp_build_uses_the_makefiles_portable_flags():
    """The Makefile and both images build llama.cpp with one set of flags (three copies: a drifted one would
    bring the SIGILL of a native AMX build back in one of them only)."""

    makefile = re.search(r"^LLAMA_CMAKE_ARGS \?= (.+)$", (ROOT / "Makefile").read_text(), re.M)
    assert makefile and "-DGGML_NATIVE=OFF" in makefile.group(1)
    for dockerfile in (DOCKERFILE, K8S / "Dockerfile"):
        arg = re.search(r'^ARG LLAMA_CMAKE_ARGS="([^"]+)"$', dockerfile.read_text(), re.M)
        assert arg, f"{dockerfile}: expected ARG LLAMA_CMAKE_ARGS=\"...\""
        assert arg.group(1) == makefile.group(1).strip(), dockerfile
        assert 'ENV CMAKE_ARGS="${LLAMA_CMAKE_ARGS}"' in dockerfile.read_text(), dockerfile
