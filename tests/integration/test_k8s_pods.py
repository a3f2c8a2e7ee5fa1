"""Generation pods rendered by the REAL KubernetesPodOperator and checked against the Kubernetes schemas.

No cluster: the operator is given a dummy kubeconfig (``in_cluster=False``); ``build_pod_request_obj``
only reads it. The rendered pod is serialized like the Kubernetes client sends it and validated with
kubernetes-validate (strict: unknown fields fail) for a Kubernetes version it bundles.
"""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import pytest

kubernetes_validate = pytest.importorskip("kubernetes_validate")
pytest.importorskip("airflow.providers.cncf.kubernetes")

from kubernetes.client import ApiClient  # noqa: E402

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator  # noqa: E402
from synthcorpus.kubernetes import (  # noqa: E402
    label_value,
    pod_name,
    pod_operator_kwargs,
    pod_shard_kwargs,
    pod_static_kwargs,
)
from synthcorpus.layout import RunLayout  # noqa: E402
from synthcorpus.spec.kubernetes import is_quantity  # noqa: E402
from synthcorpus.spec import parse_spec  # noqa: E402
from synthcorpus.stages.generate import work_unit  # noqa: E402
from tests.conftest import tiny_spec_dict  # noqa: E402

K8S_VERSIONS = ["1.30", kubernetes_validate.utils.latest_version()]
RUN_ID = "manual__2026-01-01T00:00:00+00:00"
# One work unit of the plan (what plan_shards commits and the DAG maps pods over).
SHARD = {**work_unit(RunLayout("s3://corpora/synthcorpus", "tiny", "r1"), 7), "rows": 4}
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
SECRETISH = re.compile(r"(hf_[A-Za-z0-9]{10,}|AKIA[0-9A-Z]{16}|secret|password|token|key)", re.I)

KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters:
- name: dummy
  cluster: {server: "https://127.0.0.1:1"}
users:
- name: dummy
  user: {}
contexts:
- name: dummy
  context: {cluster: dummy, user: dummy}
current-context: dummy
"""


def gpu_spec(**kubernetes):
    k8s = {
        "gpus_per_pod": 2,
        "cpu": "16",
        "memory": "96Gi",
        "node_selector": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB", "cloud.google.com/gke-nodepool": "gpu-a100"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}],
        "secrets": ["hf-token", "s3-credentials"],
        "model_cache_pvc": "synthcorpus-model-cache",
        **kubernetes,
    }
    return parse_spec(
        tiny_spec_dict(
            **{
                "generation.engine": "vllm",
                "generation.runner": "kubernetes",
                "generation.model": "HuggingFaceTB/SmolLM2-1.7B-Instruct",
                "generation.vllm": {"tensor_parallel_size": 2},
                "generation.kubernetes": k8s,
            }
        )
    )


@pytest.fixture
def kubeconfig(tmp_path):
    path = tmp_path / "kubeconfig"
    path.write_text(KUBECONFIG)
    return str(path)


def render(kwargs: dict, kubeconfig: str) -> dict:
    op = KubernetesPodOperator(task_id="generate", **kwargs, in_cluster=False, config_file=kubeconfig)
    pod = op.build_pod_request_obj(context=None)
    return ApiClient().sanitize_for_serialization(pod)


@pytest.fixture
def pod(kubeconfig, monkeypatch) -> dict:
    monkeypatch.setenv("SYNTHCORPUS_STORAGE_URI", "s3://corpora/synthcorpus")
    return render(pod_operator_kwargs(gpu_spec(), SHARD, RUN_ID), kubeconfig)


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_pod_validates_against_the_kubernetes_schema(pod, version):
    assert kubernetes_validate.validate(pod, desired_version=version, strict=True)


def test_gpu_resources_scheduling_and_cache(pod):
    spec = pod["spec"]
    (c,) = spec["containers"]
    assert c["resources"]["requests"]["nvidia.com/gpu"] == "2"
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert c["resources"]["requests"]["cpu"] == "16"
    assert c["resources"]["requests"]["memory"] == c["resources"]["limits"]["memory"] == "96Gi"
    assert spec["nodeSelector"] == {
        "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB",
        "cloud.google.com/gke-nodepool": "gpu-a100",
    }
    assert {"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"} in spec["tolerations"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["model-cache"]["persistentVolumeClaim"] == {"claimName": "synthcorpus-model-cache"}
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory"}
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert mounts == {"model-cache": "/models", "dshm": "/dev/shm"}
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["HF_HOME"] == "/models/hf"
    assert env["SYNTHCORPUS_STORAGE_URI"] == "s3://corpora/synthcorpus"  # passed through from the worker env
    assert spec["serviceAccountName"] == "synthcorpus-generator"
    assert spec["automountServiceAccountToken"] is False
    assert spec["restartPolicy"] == "Never"
    assert pod["metadata"]["namespace"] == "synthcorpus"
    assert c["image"] == "ghcr.io/example/synthcorpus-generator:0.1.0" and c["imagePullPolicy"] == "IfNotPresent"


def test_secrets_only_by_reference(pod):
    (c,) = pod["spec"]["containers"]
    assert c["envFrom"] == [{"secretRef": {"name": "hf-token"}}, {"secretRef": {"name": "s3-credentials"}}]
    for e in c["env"]:
        assert "valueFrom" not in e
        assert not SECRETISH.search(e["name"]) and not SECRETISH.search(e["value"]), e
    text = json.dumps(pod)
    assert "hf_" not in text and "AKIA" not in text and "password" not in text.lower()


def test_non_root_security_context(pod):
    psc = pod["spec"]["securityContext"]
    assert psc["runAsNonRoot"] is True and psc["runAsUser"] == 1000 and psc["fsGroup"] == 1000
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
    csc = pod["spec"]["containers"][0]["securityContext"]
    assert csc["runAsNonRoot"] is True and csc["runAsUser"] == 1000
    assert csc["allowPrivilegeEscalation"] is False and csc["privileged"] is False
    assert csc["capabilities"] == {"drop": ["ALL"]}
    assert csc["seccompProfile"] == {"type": "RuntimeDefault"}


def test_command_runs_the_worker_on_the_shard(pod):
    (c,) = pod["spec"]["containers"]
    assert c["command"] + c["args"] == [
        "python", "-m", "synthcorpus.worker", "generate", "--input", SHARD["input"], "--output", SHARD["output"],
        "--parts", SHARD["parts"], "--marker", SHARD["marker"], "--shard", "7", "--budget-entry", SHARD["budget_entry"],
    ]


def test_names_and_labels_are_valid(pod):
    meta = pod["metadata"]
    assert len(meta["name"]) <= 63 and DNS1123_SUBDOMAIN.match(meta["name"])
    assert meta["name"].startswith("synthcorpus-tiny-shard-00007-")  # + the operator's random suffix
    labels = meta["labels"]
    assert labels["synthcorpus.io/corpus"] == "tiny"
    assert labels["synthcorpus.io/shard"] == "7"
    assert labels["synthcorpus.io/run"] != RUN_ID  # ':' and '+' are not allowed in label values
    for value in labels.values():
        assert len(value) <= 63 and LABEL_VALUE.match(value), value
    assert meta["annotations"]["synthcorpus.io/run-id"] == RUN_ID
    assert meta["annotations"]["synthcorpus.io/output"] == SHARD["output"]


def test_label_and_name_helpers_stay_valid():
    long_run = "scheduled__" + "x" * 80 + "+00:00"
    for text in (RUN_ID, long_run, "__weird__", "ok-run"):
        v = label_value(text)
        assert len(v) <= 63 and LABEL_VALUE.match(v), v
    assert label_value("ok-run") == "ok-run"
    assert label_value(long_run) != label_value(long_run[:-1] + "1")  # truncation keeps runs apart
    name = pod_name("a_very_long_corpus_name_" + "z" * 40, 123456)
    assert len(name) <= 54 and DNS1123_SUBDOMAIN.match(name) and name.endswith("-shard-123456")


def test_quantities():
    for ok in ("8", "500m", "64Gi", "1.5", ".5", "1e3", "0.5Gi", "512M", "2E"):
        assert is_quantity(ok), ok
    for bad in ("lots", "64 Gi", "64GB", "-1", "", "1.5.5", "Gi"):
        assert not is_quantity(bad), bad


def test_cpu_pod_has_no_gpu_bits(kubeconfig):
    spec = gpu_spec(gpus_per_pod=0, tolerations=[], node_selector={}, model_cache_pvc=None, secrets=[])
    pod = render(pod_operator_kwargs(spec, SHARD, RUN_ID), kubeconfig)
    (c,) = pod["spec"]["containers"]
    assert "nvidia.com/gpu" not in c["resources"]["requests"] and "nvidia.com/gpu" not in c["resources"]["limits"]
    assert not pod["spec"].get("tolerations") and not pod["spec"].get("volumes") and not c.get("envFrom")
    assert "HF_HOME" not in {e["name"] for e in c["env"]}
    assert kubernetes_validate.validate(pod, desired_version="1.30", strict=True)


def test_mapped_operator_renders_the_same_pod(kubeconfig):
    """The DAG's shape: partial(static) + expand_kwargs(per-shard dicts that went through XCom as JSON)."""
    from airflow.sdk import DAG

    spec = gpu_spec()
    shards = [{**SHARD, "index": i, "input": SHARD["input"].replace("00007", f"{i:05d}")} for i in range(3)]
    per_shard = json.loads(json.dumps([pod_shard_kwargs(spec, s, RUN_ID) for s in shards]))  # XCom round trip
    with DAG("synthcorpus_k8s_mapping_check", schedule=None):
        mapped = KubernetesPodOperator.partial(
            task_id="generate", in_cluster=False, config_file=kubeconfig, **pod_static_kwargs(spec)
        ).expand_kwargs(per_shard)
    kwargs, _ = mapped._expand_mapped_kwargs({"ti": SimpleNamespace(map_index=2)})
    op = mapped.unmap(kwargs)
    pod = ApiClient().sanitize_for_serialization(op.build_pod_request_obj(context=None))
    assert kubernetes_validate.validate(pod, desired_version="1.30", strict=True)
    assert pod["spec"]["containers"][0]["args"][2] == shards[2]["input"]
    assert pod["metadata"]["labels"]["synthcorpus.io/shard"] == "2"
    assert pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "2"


def test_invalid_quantity_is_rejected_with_the_field_name():
    # Caught when the pod arguments are built; also passes once KubernetesSpec validates quantities
    # itself (parse_spec's SpecError is a ValueError naming the same field).
    with pytest.raises(ValueError, match=r"generation\.kubernetes\.memory: expected a Kubernetes quantity .* got 'lots'"):
        pod_operator_kwargs(gpu_spec(memory="lots"), SHARD, RUN_ID)


def test_other_bad_kubernetes_fields_are_named():
    with pytest.raises(ValueError) as info:
        pod_static_kwargs(
            gpu_spec(
                namespace="Synth_Corpus",
                secrets=["HF token"],
                tolerations=[{"key": "nvidia.com/gpu", "operator": "Maybe", "effect": "Sometimes"}],
            )
        )
    msg = str(info.value)
    for field in ("namespace", "secrets[0]", "tolerations[0].operator", "tolerations[0].effect"):
        assert f"generation.kubernetes.{field}:" in msg


def test_local_storage_is_rejected_for_pods():
    spec = gpu_spec()
    with pytest.raises(ValueError, match="needs storage the pods can reach"):
        pod_shard_kwargs(spec, {**SHARD, "input": "file:///tmp/plan/shard-00007.parquet"}, RUN_ID)


def test_schema_validation_catches_a_broken_pod(pod):
    """kubernetes-validate is a real check: a malformed field in the pod fails with its path."""
    broken = json.loads(json.dumps(pod))
    broken["spec"]["containers"][0]["resources"]["limit"] = broken["spec"]["containers"][0]["resources"].pop("limits")
    with pytest.raises(kubernetes_validate.ValidationError) as info:
        kubernetes_validate.validate(broken, desired_version="1.30", strict=True)
    assert "limit" in info.value.message
    broken = json.loads(json.dumps(pod))
    broken["spec"]["containers"][0]["resources"]["requests"]["nvidia.com/gpu"] = {"count": 2}
    with pytest.raises(kubernetes_validate.ValidationError) as info:
        kubernetes_validate.validate(broken, desired_version="1.30", strict=True)
    assert "nvidia.com/gpu" in "/".join(map(str, info.value.path))


def _prune(obj):
    """Drop empty values, as the API server would store the object."""
    if isinstance(obj, dict):
        out = {k: _prune(v) for k, v in obj.items()}
        return {k: v for k, v in out.items() if v not in (None, {}, [])}
    if isinstance(obj, list):
        return [_prune(v) for v in obj]
    return obj


def test_reference_pod_template_matches_the_operator(kubeconfig, monkeypatch):
    """include/k8s/pod_template.yaml is what the operator renders for the documented spec."""
    import yaml

    from tests.conftest import INCLUDE

    template = yaml.safe_load((INCLUDE / "k8s" / "pod_template.yaml").read_text())
    assert kubernetes_validate.validate(template, desired_version="1.30", strict=True)

    monkeypatch.setenv("SYNTHCORPUS_STORAGE_URI", "s3://my-bucket/synthcorpus")
    spec = parse_spec(
        tiny_spec_dict(
            **{
                "name": "demo",
                "generation.engine": "vllm",
                "generation.runner": "kubernetes",
                "generation.model": "HuggingFaceTB/SmolLM2-1.7B-Instruct",
                "generation.kubernetes": {"secrets": ["hf-token", "s3-credentials"]},
            }
        )
    )
    args = template["spec"]["containers"][0]["args"]
    flags = dict(zip(args[1::2], args[2::2]))  # generate --input I --output O --parts P --marker M --shard N
    shard = {"index": int(flags["--shard"]), "input": flags["--input"], "output": flags["--output"],
             "parts": flags["--parts"], "marker": flags["--marker"]}
    rendered = _prune(render({**pod_operator_kwargs(spec, shard, RUN_ID), "random_name_suffix": False}, kubeconfig))
    operator_only = {"airflow_version", "airflow_kpo_in_cluster"}
    rendered["metadata"]["labels"] = {k: v for k, v in rendered["metadata"]["labels"].items() if k not in operator_only}
    rendered["spec"].pop("hostNetwork")  # operator default (false), not ours
    rendered["spec"]["containers"][0].pop("terminationMessagePolicy")  # operator default ("File")
    assert rendered == _prune(template)
