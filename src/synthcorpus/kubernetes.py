"""Generation pods: the ``KubernetesPodOperator`` arguments for one plan shard (``generation.runner: kubernetes``).

Every pod runs ``synthcorpus.stages.generate.run_unit``: the same ``produce`` and marker as the in-process task::

    python -m synthcorpus.worker generate --input <plan shard> --output <shard> --parts <checkpoints> \
        --marker <commit marker> --shard <index> [--budget-entry <running totals>]

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

Light at import time: ``kubernetes.client`` is imported inside the functions that need it. The name and
quantity checks the spec validates with live in ``synthcorpus.spec.kubernetes``.
"""

from __future__ import annotations

import hashlib
import os
import re
from typing import TYPE_CHECKING, Any

from .layout import shard_name
from .spec.kubernetes import _TOLERATION_KEYS, is_label_value, kubernetes_problems
from .spec.vocabulary import STORAGE_ENV

if TYPE_CHECKING:
    from .spec import CorpusSpec, KubernetesSpec

GPU_RESOURCE = "nvidia.com/gpu"
MODELS_MOUNT = "/models"
HF_HOME = "/models/hf"
RUN_AS_USER = 1000
WORKER_COMMAND = ["python", "-m", "synthcorpus.worker"]

LABEL_PREFIX = "synthcorpus.io"
POD_NAME_BASE_MAX = 54  # the operator appends "-" + 8 random characters and caps names at 63

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
    tail = f"-{shard_name(index)}"
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
                      "--shard", str(index)]
        # The shard's running totals, which every other shard sums for the run-wide budget.
        + (["--budget-entry", _check_uri(str(shard["budget_entry"]), "budget_entry")] if shard.get("budget_entry") else []),
        "env_vars": pod_env(spec, environ),
    }


def pod_operator_kwargs(spec: CorpusSpec, shard: dict[str, Any], run_id: str) -> dict[str, Any]:
    """All ``KubernetesPodOperator`` keyword arguments (but ``task_id``) for one plan shard."""
    return {**pod_static_kwargs(spec), **pod_shard_kwargs(spec, shard, run_id)}
