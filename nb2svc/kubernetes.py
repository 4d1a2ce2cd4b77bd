"""Kubernetes and KServe manifests for a service directory: ``nb2svc export kubernetes DIR --image IMAGE``.

``kubernetes_objects(service_dir, options)`` gives the objects as dicts (a Deployment, a Service, a
HorizontalPodAutoscaler and a PodDisruptionBudget; or with ``kserve`` one KServe ``InferenceService``);
``to_yaml`` writes them as one multi-document YAML text. The startup probe is sized by the model's load time,
measured here by loading the service with the runtime's own ``load_service`` (or given as ``load_seconds``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nb2svc.errors import ServiceDirInvalid, UsageError
from nb2svc.runtime.manifest import Manifest, ManifestError, read_manifest
from nb2svc.runtime.settings import SETTINGS

PORT = 8000
USER_ID = 10001
API_KEY_VARIABLE = "NB2SVC_API_KEY"
# The startup probe allows the process's start and imports, then the model's load three times over (a cold
# node, a busy one); never less than a minute.
PROBE_PERIOD_SECONDS = 5
START_SECONDS = 30
LOAD_MARGIN = 3
MIN_STARTUP_SECONDS = 60
# KServe's own fields of a predictor: the rest of it is a core/v1 PodSpec.
KSERVE_PREDICTOR_FIELDS = ("minReplicas", "maxReplicas", "scaleMetric", "scaleTarget")
# A Service's name (and an InferenceService's) must be a DNS-1035 label: DNS-1123's, starting with a letter.
_DNS_1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


@dataclass(frozen=True)
class Resources:
    """The container's requests and limits, in Kubernetes quantities."""

    cpu_request: str = "500m"
    memory_request: str = "512Mi"
    cpu_limit: str = "2"
    memory_limit: str = "2Gi"

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": {"cpu": self.cpu_request, "memory": self.memory_request},
            "limits": {"cpu": self.cpu_limit, "memory": self.memory_limit},
        }


@dataclass(frozen=True)
class KubernetesOptions:
    image: str
    name: str | None = None  # default: the manifest's name as a DNS-1035 label
    replicas: int = 2  # the Deployment's, and the autoscaler's minimum
    max_replicas: int = 5
    cpu_utilization: int = 70  # the autoscaler's target, percent of the CPU request
    resources: Resources = field(default_factory=Resources)
    env: tuple[tuple[str, str], ...] = ()  # (variable, value) of the runtime's SETTINGS
    api_key_secret: str | None = None  # default: NAME-api-key
    api_key_secret_key: str = "api-key"
    require_api_key: bool = False  # the pod does not start without the Secret
    load_seconds: float | None = None  # None: measured by loading the service here
    kserve: bool = False


def kubernetes_objects(service_dir: str | Path, options: KubernetesOptions) -> list[dict[str, Any]]:
    """The objects that run ``service_dir``'s image: UsageError for an option that cannot be used."""
    manifest = _manifest(Path(service_dir))
    name = checked_name(options.name) if options.name else dns_name(manifest.name)
    _check_counts(options)
    env = environment(options.env, options.api_key_secret or f"{name}-api-key", options)
    load_seconds = options.load_seconds if options.load_seconds is not None else measure_load_seconds(service_dir)
    # The port opens once the model has loaded: until then the startup probe fails, then liveness takes over.
    if options.kserve:
        container = _container("kserve-container", options, env, startup_probe(load_seconds, "/v2/health/live"))
        return [inference_service(name, manifest, options, container)]
    container = _container(name, options, env, startup_probe(load_seconds, "/health"))
    container["readinessProbe"] = _probe("/ready", period=5, failures=3)
    container["livenessProbe"] = _probe("/health", period=10, failures=3)
    return [
        deployment(name, manifest, options, container),
        service(name, manifest),
        autoscaler(name, manifest, options),
        disruption_budget(name, manifest),
    ]


def to_yaml(objects: list[dict[str, Any]]) -> str:
    """One YAML document per object, in order, keys as written."""
    return yaml.dump_all(objects, Dumper=_Dumper, sort_keys=False, default_flow_style=False)


class _Dumper(yaml.SafeDumper):
    """PyYAML reads YAML 1.1, kubectl 1.2: a string that 1.2 reads as a number (a digest such as ``1234e5678901``)
    is quoted, or the label would reach the API server as a number."""


# YAML 1.2's core schema's numbers (PyYAML already quotes what 1.1 reads as one, and true/false/yes/no...).
_YAML_1_2_NUMBER = re.compile(r"^([-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?|0x[0-9a-fA-F]+|0o[0-7]+)$")


def _string(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="'" if _YAML_1_2_NUMBER.match(value) else None)


_Dumper.add_representer(str, _string)


def dns_name(text: str) -> str:
    """``text`` as a DNS-1035 label: lower case, ``_`` and other characters as ``-``, starting with a letter, at most
    63 characters."""
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    if not name[:1].isalpha():
        name = f"model-{name}"
    return name[:63].strip("-")


def checked_name(name: str) -> str:
    if not _DNS_1035_LABEL.match(name) or len(name) > 63:
        raise UsageError(
            f"--name {name!r} is not a valid Kubernetes name (DNS-1035 label, as a Service's): use at most 63 "
            f"lower-case letters, digits and '-', starting with a letter and ending with a letter or digit, e.g. "
            f"{dns_name(name)!r}"
        )
    return name


def measure_load_seconds(service_dir: str | Path) -> float:
    """Seconds ``load_service`` takes here (manifest, environment, unpickling, replaying the examples)."""
    from nb2svc.runtime.load import LoadedService, load_service

    loaded = load_service(service_dir)
    if not isinstance(loaded, LoadedService):
        raise UsageError(
            f"{service_dir} did not load here, so its load time cannot be measured for the startup probe: "
            f"{loaded.reason.message}. Run the export where the service's lock is installed, or give "
            "--load-seconds SECONDS (the model's load time)"
        )
    return loaded.load_seconds


def startup_probe(load_seconds: float, path: str) -> dict[str, Any]:
    """A probe whose failureThreshold x periodSeconds covers the process's start and the load time, with margin."""
    budget = max(MIN_STARTUP_SECONDS, START_SECONDS + LOAD_MARGIN * load_seconds)
    return _probe(path, period=PROBE_PERIOD_SECONDS, failures=math.ceil(budget / PROBE_PERIOD_SECONDS))


def environment(given: tuple[tuple[str, str], ...], secret: str, options: KubernetesOptions) -> list[dict[str, Any]]:
    """The settings given, each checked with the runtime's own parser, then the API key from its Secret."""
    settings = {s.variable: s for s in SETTINGS if s.variable != API_KEY_VARIABLE}
    env: list[dict[str, Any]] = []
    for variable, value in given:
        if variable == API_KEY_VARIABLE:
            raise UsageError(f"--env {API_KEY_VARIABLE} is refused: the API key comes from a Secret (--api-key-secret)")
        if variable not in settings:
            raise UsageError(
                f"--env {variable}: not a setting of the service; the settings are {', '.join(sorted(settings))}"
            )
        try:
            settings[variable].parse(value)
        except ValueError as exc:  # the runtime would refuse to start with it
            raise UsageError(f"--env {variable}={value!r} cannot be used: {exc}") from None
        env.append({"name": variable, "value": value})
    _check_secret_name(secret)
    key_ref = {"name": secret, "key": options.api_key_secret_key, "optional": not options.require_api_key}
    env.append({"name": API_KEY_VARIABLE, "valueFrom": {"secretKeyRef": key_ref}})
    return env


def _check_secret_name(secret: str) -> None:
    if not re.match(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", secret) or len(secret) > 253:
        raise UsageError(
            f"--api-key-secret {secret!r} is not a valid Secret name: lower-case letters, digits, '-' and '.', "
            "starting and ending with a letter or digit"
        )


def deployment(name: str, manifest: Manifest, options: KubernetesOptions, container: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(name, manifest),
        "spec": {
            "replicas": options.replicas,
            "selector": {"matchLabels": _selector(name)},
            "template": {
                "metadata": {"labels": _labels(name, manifest), "annotations": _annotations(manifest)},
                "spec": _pod_spec(container),
            },
        },
    }


def service(name: str, manifest: Manifest) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(name, manifest),
        "spec": {
            "type": "ClusterIP",
            "selector": _selector(name),
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def autoscaler(name: str, manifest: Manifest, options: KubernetesOptions) -> dict[str, Any]:
    target = {"type": "Utilization", "averageUtilization": options.cpu_utilization}
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(name, manifest),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": options.replicas,
            "maxReplicas": options.max_replicas,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": target}}],
        },
    }


def disruption_budget(name: str, manifest: Manifest) -> dict[str, Any]:
    """maxUnavailable 1: a node drain takes one pod at a time, and is never blocked with a single replica."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(name, manifest),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": _selector(name)}},
    }


def inference_service(
    name: str, manifest: Manifest, options: KubernetesOptions, container: dict[str, Any]
) -> dict[str, Any]:
    """A KServe v1beta1 InferenceService whose predictor is the service's own container (Open Inference Protocol)."""
    container["readinessProbe"] = _probe("/v2/health/ready", period=5, failures=3)
    container["livenessProbe"] = _probe("/v2/health/live", period=10, failures=3)
    metadata = _metadata(name, manifest)
    metadata["annotations"]["serving.kserve.io/deploymentMode"] = "RawDeployment"
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": metadata,
        "spec": {
            "predictor": {
                "minReplicas": options.replicas,
                "maxReplicas": options.max_replicas,
                "scaleMetric": "cpu",
                "scaleTarget": options.cpu_utilization,
                **_pod_spec(container),
            }
        },
    }


def _manifest(service_dir: Path) -> Manifest:
    try:
        return read_manifest(service_dir)
    except ManifestError as exc:
        raise ServiceDirInvalid(f"{service_dir} is not a service directory nb2svc can export: {exc}") from None


def _check_counts(options: KubernetesOptions) -> None:
    if options.replicas < 1 or options.max_replicas < options.replicas:
        raise UsageError(
            f"--max-replicas {options.max_replicas} is below --replicas {options.replicas}: give a maximum of at "
            "least the minimum (both 1 or more)"
        )
    if not 1 <= options.cpu_utilization <= 100:
        raise UsageError(f"--cpu-utilization {options.cpu_utilization}: give a percentage from 1 to 100")


def _container(
    name: str, options: KubernetesOptions, env: list[dict[str, Any]], startup: dict[str, Any]
) -> dict[str, Any]:
    return {
        "name": name,
        "image": options.image,
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        "env": env,
        "resources": options.resources.to_dict(),
        "startupProbe": startup,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": USER_ID,
            "runAsGroup": USER_ID,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }


def _pod_spec(container: dict[str, Any]) -> dict[str, Any]:
    """The pod around ``container``: non-root, and a writable /tmp since the root filesystem is read-only."""
    return {
        "automountServiceAccountToken": False,  # the service never calls the Kubernetes API
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": USER_ID,
            "runAsGroup": USER_ID,
            "fsGroup": USER_ID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [{"name": "tmp", "emptyDir": {}}],
    }


def _probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": PORT},
        "periodSeconds": period,
        "failureThreshold": failures,
        "timeoutSeconds": 2,
    }


def _selector(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/instance": name}


def _labels(name: str, manifest: Manifest) -> dict[str, str]:
    return {**_selector(name), "app.kubernetes.io/version": manifest.version, "app.kubernetes.io/managed-by": "nb2svc"}


def _annotations(manifest: Manifest) -> dict[str, str]:
    return {"nb2svc/model-version": manifest.version, "nb2svc/nb2svc-version": manifest.nb2svc_version}


def _metadata(name: str, manifest: Manifest) -> dict[str, Any]:
    return {"name": name, "labels": _labels(name, manifest), "annotations": _annotations(manifest)}
