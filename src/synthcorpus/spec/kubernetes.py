"""What the Kubernetes API server would refuse in ``generation.kubernetes`` (names, quantities,
tolerations), checked at spec load: a bad value must not break DAG parsing for every corpus.
Regexes only; the pod builder (``synthcorpus.kubernetes``) uses the same checks."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .generation import KubernetesSpec

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
