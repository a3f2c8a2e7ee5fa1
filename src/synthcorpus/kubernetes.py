"""Generation pods: the ``KubernetesPodOperator`` arguments for one plan shard (``generation.runner: kubernetes``).

Every pod runs the same command as the in-process task::

    python -m synthcorpus.worker generate --input <plan shard URI> --output <output shard URI>

in the generator image (``include/k8s/Dockerfile``), so a plan shard plus shared storage (``s3://``) is
all a pod needs. Credentials never appear here: each name in ``generation.kubernetes.secrets`` becomes an
``envFrom`` Secret reference, resolved by the kubelet when the pod starts.

The arguments come in two parts, so a DAG can map one operator over the shards:

- :func:`pod_static_kwargs` (``kubernetes.client`` model objects, the same for every shard) goes into
  ``KubernetesPodOperator.partial(...)``;
- :func:`pod_shard_kwargs` (plain JSON: name, labels, annotations, arguments, env) is one element of the
  list given to ``.expand_kwargs(...)``; it travels through XCom, so it holds no model objects.

:func:`pod_operator_kwargs` merges both for one unmapped operator. Nothing here talks to a cluster;
``in_cluster``, ``config_file`` and ``kubernetes_conn_id`` are left to the deployment.

Light at import time (``re`` only): ``kubernetes.client`` is imported inside the functions that need it,
so :func:`kubernetes_problems` can back a spec validator without slowing DAG parsing.
"""

from __future__ import annotations

import hashlib
import os
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .spec import CorpusSpec, KubernetesSpec

GPU_RESOURCE = "nvidia.com/gpu"
MODELS_MOUNT = "/models"
HF_HOME = "/models/hf"
RUN_AS_USER = 1000
WORKER_COMMAND = ["python", "-m", "synthcorpus.worker"]
STORAGE_ENV = "SYNTHCORPUS_STORAGE_URI"  # same name as spec.STORAGE_ENV; kept literal to stay import-free

LABEL_PREFIX = "synthcorpus.io"
POD_NAME_BASE_MAX = 54  # the operator appends "-" + 8 random characters and caps names at 63

# Kubernetes resource quantity (k8s.io/apimachinery resource.Quantity), without a sign: requests are >= 0.
_QUANTITY = re.compile(r"^(\d+(\.\d*)?|\.\d+)(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E|[eE][+-]?\d+)?$")
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")  # max 63
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")  # max 253
_LABEL_NAME = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)$")  # max 63
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")  # max 63, may be empty
_TOLERATION_KEYS = {
    "key": "key",
    "operator": "operator",
    "value": "value",
    "effect": "effect",
    "tolerationSeconds": "toleration_seconds",
    "toleration_seconds": "toleration_seconds",
}
_EFFECTS = ("", "NoSchedule", "PreferNoSchedule", "NoExecute")


# --------------------------------------------------------------------------------------- validation


def is_quantity(value: str) -> bool:
    """Whether ``value`` is a non-negative Kubernetes quantity such as ``8``, ``500m``, ``64Gi``, ``1e3``."""
    return bool(_QUANTITY.match(str(value)))


def is_label_key(key: str) -> bool:
    """A label (or node selector) key: optional DNS subdomain prefix and '/', then a name of <= 63 chars."""
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _DNS1123_SUBDOMAIN.match(prefix)):
        return False
    return 0 < len(name) <= 63 and bool(_LABEL_NAME.match(name))


def is_label_value(value: str) -> bool:
    return len(value) <= 63 and bool(_LABEL_VALUE.match(value))


def _is_subdomain(name: str) -> bool:
    return 0 < len(name) <= 253 and bool(_DNS1123_SUBDOMAIN.match(name))


def kubernetes_problems(k: KubernetesSpec) -> list[tuple[str, str]]:
    """Every problem with a ``generation.kubernetes`` block, as ``(field, expected ...)`` pairs.

    The checks the API server would make when the pod is created (kubernetes-validate's JSON schemas
    accept any string for a quantity, so ``memory: lots`` would otherwise only fail on the cluster).
    """
    problems: list[tuple[str, str]] = []
    for field in ("cpu", "memory"):
        value = getattr(k, field)
        if not is_quantity(value):
            problems.append((field, f"expected a Kubernetes quantity like '8', '500m', '64Gi' or '512M', got {value!r}"))
    if not (len(k.namespace) <= 63 and _DNS1123_LABEL.match(k.namespace)):
        problems.append(("namespace", f"expected a DNS-1123 label (lowercase letters, digits, '-'), got {k.namespace!r}"))
    if not k.image.strip() or any(c.isspace() for c in k.image):
        problems.append(("image", f"expected an image reference without spaces, got {k.image!r}"))
    if k.service_account is not None and not _is_subdomain(k.service_account):
        problems.append(("service_account", f"expected a DNS-1123 name, got {k.service_account!r}"))
    if k.model_cache_pvc is not None and not _is_subdomain(k.model_cache_pvc):
        problems.append(("model_cache_pvc", f"expected a DNS-1123 name, got {k.model_cache_pvc!r}"))
    for i, name in enumerate(k.secrets):
        if not _is_subdomain(name):
            problems.append((f"secrets[{i}]", f"expected a Secret name (DNS-1123), got {name!r}"))
    if len(set(k.secrets)) != len(k.secrets):
        problems.append(("secrets", "expected unique Secret names"))
    for key, value in k.node_selector.items():
        if not is_label_key(key):
            problems.append((f"node_selector.{key}", "expected a label key like 'nvidia.com/gpu.product'"))
        if not is_label_value(value):
            problems.append((f"node_selector.{key}", f"expected a label value (<= 63 chars, [A-Za-z0-9._-]), got {value!r}"))
    for i, tol in enumerate(k.tolerations):
        unknown = sorted(set(tol) - set(_TOLERATION_KEYS))
        if unknown:
            problems.append((f"tolerations[{i}]", f"unknown keys {unknown}; expected key, operator, value, effect, tolerationSeconds"))
        op = tol.get("operator", "Equal")
        if op not in ("Equal", "Exists"):
            problems.append((f"tolerations[{i}].operator", f"expected 'Equal' or 'Exists', got {op!r}"))
        if op == "Exists" and tol.get("value"):
            problems.append((f"tolerations[{i}].value", "expected no value with operator 'Exists'"))
        if tol.get("effect", "") not in _EFFECTS:
            problems.append((f"tolerations[{i}].effect", f"expected one of {', '.join(e for e in _EFFECTS if e)}, got {tol['effect']!r}"))
        seconds = tol.get("tolerationSeconds", tol.get("toleration_seconds"))
        if seconds is not None and not re.match(r"^-?\d+$", str(seconds)):
            problems.append((f"tolerations[{i}].tolerationSeconds", f"expected an integer, got {seconds!r}"))
        if tol.get("key") and not is_label_key(tol["key"]):
            problems.append((f"tolerations[{i}].key", f"expected a taint key like 'nvidia.com/gpu', got {tol['key']!r}"))
    return problems


def check_kubernetes(spec: CorpusSpec) -> None:
    """Raise ValueError naming every bad ``generation.kubernetes`` field."""
    problems = kubernetes_problems(spec.generation.kubernetes)
    if problems:
        raise ValueError(
            "; ".join(f"generation.kubernetes.{field}: {expected}" for field, expected in problems)
        )


# ------------------------------------------------------------------------------------------ names


def label_value(text: str) -> str:
    """``text`` as a valid label value; changed or long values get a short hash so they stay distinct.

    Airflow run ids (``manual__2026-01-01T00:00:00+00:00``) contain ':' and '+', which labels forbid.
    """
    clean = re.sub(r"[^A-Za-z0-9_.-]", "-", text)
    if clean == text and is_label_value(clean):
        return clean
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    head = re.sub(r"^[^A-Za-z0-9]+", "", clean)[: 63 - 9]
    head = re.sub(r"[^A-Za-z0-9]+$", "", head)
    return f"{head}-{digest}" if head else digest


def pod_name(corpus: str, index: int) -> str:
    """``synthcorpus-<corpus>-shard-00007``: a DNS-1123 name short enough for the operator's suffix."""
    tail = f"-shard-{index:05d}"
    room = POD_NAME_BASE_MAX - len("synthcorpus-") - len(tail)
    slug = re.sub(r"[^a-z0-9-]+", "-", corpus.lower())[:room].strip("-")
    return f"synthcorpus-{slug}{tail}" if slug else f"synthcorpus{tail}"


def _check_uri(uri: str, what: str) -> str:
    scheme = uri.split("://", 1)[0] if "://" in uri else "file"
    if scheme in ("file", "memory"):
        raise ValueError(
            f"shard {what} {uri!r}: runner 'kubernetes' needs storage the pods can reach (s3://...); "
            "set storage.uri or $SYNTHCORPUS_STORAGE_URI to an s3:// URI"
        )
    return uri


# ------------------------------------------------------------------------------------------ kwargs


def _tolerations(k: KubernetesSpec) -> list[Any]:
    from kubernetes.client import models as k8s

    out = []
    for tol in k.tolerations:
        kw = {_TOLERATION_KEYS[key]: value for key, value in tol.items()}
        if "toleration_seconds" in kw:
            kw["toleration_seconds"] = int(kw["toleration_seconds"])
        out.append(k8s.V1Toleration(**kw))
    if k.gpus_per_pod > 0 and not any(t.key == GPU_RESOURCE and t.effect in (None, "", "NoSchedule") for t in out):
        # The taint GPU node pools carry (GKE, AKS, EKS GPU AMIs, the NVIDIA GPU operator docs).
        out.append(k8s.V1Toleration(key=GPU_RESOURCE, operator="Exists", effect="NoSchedule"))
    return out


def pod_static_kwargs(spec: CorpusSpec) -> dict[str, Any]:
    """The arguments every shard's pod shares: image, resources, scheduling, volumes, secrets, security.

    Holds ``kubernetes.client`` model objects: pass it to ``KubernetesPodOperator.partial`` (parsed with
    the DAG file), never through XCom.
    """
    from kubernetes.client import models as k8s

    check_kubernetes(spec)
    k = spec.generation.kubernetes
    requests = {"cpu": k.cpu, "memory": k.memory}
    limits = {"memory": k.memory}
    if k.gpus_per_pod > 0:
        # Extended resources must be requested in limits; requests, if given, must equal them.
        requests[GPU_RESOURCE] = limits[GPU_RESOURCE] = str(k.gpus_per_pod)

    volumes: list[Any] = []
    mounts: list[Any] = []
    if k.model_cache_pvc:
        volumes.append(
            k8s.V1Volume(
                name="model-cache",
                persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(claim_name=k.model_cache_pvc),
            )
        )
        mounts.append(k8s.V1VolumeMount(name="model-cache", mount_path=MODELS_MOUNT))
    if k.gpus_per_pod > 0:
        # vLLM/NCCL workers share tensors through /dev/shm; the container runtime default is 64 MiB.
        # A memory-backed emptyDir counts against the container's memory limit.
        volumes.append(k8s.V1Volume(name="dshm", empty_dir=k8s.V1EmptyDirVolumeSource(medium="Memory")))
        mounts.append(k8s.V1VolumeMount(name="dshm", mount_path="/dev/shm"))

    seccomp = k8s.V1SeccompProfile(type="RuntimeDefault")
    return {
        "namespace": k.namespace,
        "image": k.image,
        "image_pull_policy": k.image_pull_policy,
        "service_account_name": k.service_account,
        # The worker never calls the Kubernetes API (IRSA / workload identity tokens are projected separately).
        "automount_service_account_token": False,
        "cmds": list(WORKER_COMMAND),
        "container_resources": k8s.V1ResourceRequirements(requests=requests, limits=limits),
        "volumes": volumes,
        "volume_mounts": mounts,
        "env_from": [k8s.V1EnvFromSource(secret_ref=k8s.V1SecretEnvSource(name=name)) for name in k.secrets],
        "node_selector": dict(k.node_selector),
        "tolerations": _tolerations(k),
        "security_context": k8s.V1PodSecurityContext(
            run_as_non_root=True,
            run_as_user=RUN_AS_USER,
            run_as_group=RUN_AS_USER,
            fs_group=RUN_AS_USER,  # the model-cache PVC is writable by the worker
            seccomp_profile=seccomp,
        ),
        "container_security_context": k8s.V1SecurityContext(
            run_as_non_root=True,
            run_as_user=RUN_AS_USER,
            allow_privilege_escalation=False,
            privileged=False,
            capabilities=k8s.V1Capabilities(drop=["ALL"]),
            seccomp_profile=seccomp,
        ),
        "deferrable": k.deferrable,
        "startup_timeout_seconds": k.startup_timeout_s,
        "schedule_timeout_seconds": k.startup_timeout_s,  # GPU nodes may need an autoscaler round-trip
        "get_logs": True,
        "log_events_on_failure": True,
        "on_finish_action": "delete_succeeded_pod",
        "do_xcom_push": False,
    }


def pod_env(spec: CorpusSpec, environ: dict[str, str] | None = None) -> dict[str, str]:
    """Plain (non-secret) environment of a generation pod; ``$SYNTHCORPUS_STORAGE_URI`` is passed
    through from the calling (Airflow worker) environment when set there."""
    environ = os.environ if environ is None else environ
    env = {"PYTHONUNBUFFERED": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}
    if spec.generation.kubernetes.model_cache_pvc:
        env["HF_HOME"] = HF_HOME
    if environ.get(STORAGE_ENV):
        env[STORAGE_ENV] = environ[STORAGE_ENV]
    return env


def pod_shard_kwargs(
    spec: CorpusSpec, shard: dict[str, Any], run_id: str, environ: dict[str, str] | None = None
) -> dict[str, Any]:
    """The per-shard arguments: pod name, labels, annotations, worker arguments and env.

    JSON only (strings, dicts, lists), so a task can return a list of these for ``expand_kwargs``.
    """
    index = int(shard["index"])
    in_uri, out_uri, parts_uri, marker_uri = (_check_uri(str(shard[k]), k) for k in ("input", "output", "parts", "marker"))
    return {
        "name": pod_name(spec.name, index),
        "labels": {
            "app.kubernetes.io/name": "synthcorpus",
            "app.kubernetes.io/component": "generator",
            f"{LABEL_PREFIX}/corpus": label_value(spec.name),
            f"{LABEL_PREFIX}/run": label_value(run_id),
            f"{LABEL_PREFIX}/shard": str(index),
        },
        "annotations": {
            f"{LABEL_PREFIX}/run-id": run_id,
            f"{LABEL_PREFIX}/input": in_uri,
            f"{LABEL_PREFIX}/output": out_uri,
        },
        "arguments": ["generate", "--input", in_uri, "--output", out_uri, "--parts", parts_uri, "--marker", marker_uri,
                      "--shard", str(index)],
        "env_vars": pod_env(spec, environ),
    }


def pod_operator_kwargs(spec: CorpusSpec, shard: dict[str, Any], run_id: str) -> dict[str, Any]:
    """All ``KubernetesPodOperator`` keyword arguments (but ``task_id``) for one plan shard."""
    return {**pod_static_kwargs(spec), **pod_shard_kwargs(spec, shard, run_id)}
