"""`nb2svc export kubernetes`: every object validated offline against the Kubernetes API's schemas
(kubernetes-validate, strict) and the InferenceService against a checked-in subset of KServe's CRD."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner, Result

import nb2svc
from nb2svc.cli import cli
from nb2svc.errors import UsageError
from nb2svc.kubernetes import (
    KSERVE_PREDICTOR_FIELDS,
    KubernetesOptions,
    kubernetes_objects,
    startup_probe,
    to_yaml,
)
from nb2svc.runtime.load import LoadedService, load_service

from helpers import FIXTURES, make_service

# The oldest and the newest Kubernetes whose schemas kubernetes-validate 1.37 bundles that have every API used here.
KUBERNETES_VERSIONS = ("1.25", "1.37")
KSERVE_SCHEMA = json.loads((Path(__file__).parent / "kserve_inferenceservice_v1beta1.schema.json").read_text())
IMAGE = "registry.example/linear-regression:1"


def double(x: float) -> float:
    return 2 * x


def export(*args: str) -> Result:
    return CliRunner().invoke(cli, ["export", "kubernetes", *args], catch_exceptions=False)


def validate(resource: dict[str, Any], version: str) -> None:
    """Raises kubernetes_validate.ValidationError if ``resource`` is not valid for that Kubernetes (strict: no
    unknown fields)."""
    kubernetes_validate.validate(resource, version, strict=True)


def as_pod(inference_service: dict[str, Any]) -> dict[str, Any]:
    """The predictor without KServe's own fields is a core/v1 PodSpec: the Pod it makes."""
    predictor = inference_service["spec"]["predictor"]
    spec = {key: value for key, value in predictor.items() if key not in KSERVE_PREDICTOR_FIELDS}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "predictor"}, "spec": spec}


@pytest.fixture(scope="module")
def service_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("k8s") / "service"
    nb2svc.build(FIXTURES / "linear_regression.ipynb", directory)
    return directory


@pytest.fixture
def made_service(tmp_path: Path) -> Path:
    """A service directory made from a manifest object (no build, no index)."""
    return make_service(tmp_path / "made", double=double)


@pytest.mark.network  # the build locks against the package index
def test_every_object_validates_against_the_kubernetes_schemas(service_dir: Path) -> None:
    objects = kubernetes_objects(service_dir, KubernetesOptions(IMAGE, env=(("NB2SVC_TIMEOUT", "30"),)))
    assert [o["kind"] for o in objects] == ["Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"]
    for version in KUBERNETES_VERSIONS:
        for resource in objects:
            validate(resource, version)


@pytest.mark.network
def test_the_inference_service_validates_as_a_pod_and_against_kserve(service_dir: Path) -> None:
    (inference_service,) = kubernetes_objects(service_dir, KubernetesOptions(IMAGE, kserve=True))
    jsonschema.validate(inference_service, KSERVE_SCHEMA)
    for version in KUBERNETES_VERSIONS:
        validate(as_pod(inference_service), version)
    predictor = inference_service["spec"]["predictor"]
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (2, 5)
    (container,) = predictor["containers"]
    assert container["image"] == IMAGE
    assert container["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": 8000}
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": 8000}


def test_a_broken_object_fails_validation(made_service: Path) -> None:
    """The validators run: an unknown field, a wrong type, a missing container name are each refused."""
    deployment = kubernetes_objects(made_service, KubernetesOptions(IMAGE, load_seconds=1))[0]
    validate(deployment, KUBERNETES_VERSIONS[-1])
    unknown = copy.deepcopy(deployment)
    unknown["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(unknown, KUBERNETES_VERSIONS[-1])
    wrong_type = copy.deepcopy(deployment)
    wrong_type["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(wrong_type, KUBERNETES_VERSIONS[-1])
    (inference_service,) = kubernetes_objects(made_service, KubernetesOptions(IMAGE, load_seconds=1, kserve=True))
    jsonschema.validate(inference_service, KSERVE_SCHEMA)
    del inference_service["spec"]["predictor"]["containers"][0]["name"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(inference_service, KSERVE_SCHEMA)
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(as_pod(inference_service), KUBERNETES_VERSIONS[-1])


@pytest.mark.network
def test_the_probes_and_a_startup_probe_that_covers_the_load_time(service_dir: Path) -> None:
    started = time.perf_counter()
    loaded = load_service(service_dir)
    assert isinstance(loaded, LoadedService)
    load_seconds = time.perf_counter() - started
    deployment = kubernetes_objects(service_dir, KubernetesOptions(IMAGE))[0]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": 8000}
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": 8000}
    startup = container["startupProbe"]
    assert startup["httpGet"] == {"path": "/health", "port": 8000}
    assert startup["failureThreshold"] * startup["periodSeconds"] >= 30 + 2 * load_seconds


def test_the_startup_probe_grows_with_the_load_time() -> None:
    for load_seconds in (0, 10, 100, 1000):
        probe = startup_probe(load_seconds, "/health")
        allowed = probe["failureThreshold"] * probe["periodSeconds"]
        assert allowed >= max(60, 30 + 3 * load_seconds)
        assert allowed < max(60, 30 + 3 * load_seconds) + probe["periodSeconds"]


def test_a_service_that_does_not_load_here_asks_for_the_load_time(made_service: Path) -> None:
    (made_service / "artifacts" / "double.pkl").write_bytes(b"not the artifact")
    with pytest.raises(UsageError, match="did not load here.*--load-seconds"):
        kubernetes_objects(made_service, KubernetesOptions(IMAGE))
    assert kubernetes_objects(made_service, KubernetesOptions(IMAGE, load_seconds=20))


def test_the_security_context_and_a_writable_tmp(made_service: Path) -> None:
    for kserve in (False, True):
        resource = kubernetes_objects(made_service, KubernetesOptions(IMAGE, load_seconds=1, kserve=kserve))[0]
        pod = resource["spec"]["predictor"] if kserve else resource["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        (container,) = pod["containers"]
        assert container["securityContext"] == {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "runAsGroup": 10001,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        }
        assert container["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
        assert pod["volumes"] == [{"name": "tmp", "emptyDir": {}}]
        assert container["resources"]["limits"] == {"cpu": "2", "memory": "2Gi"}


def test_settings_and_the_api_key_from_a_secret(made_service: Path) -> None:
    result = export(
        str(made_service), "--image", IMAGE, "--load-seconds", "1", "--env", "NB2SVC_TIMEOUT=30",
        "--api-key-secret", "keys", "--require-api-key", "--memory-limit", "4Gi",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    deployment = next(yaml.safe_load_all(result.stdout))
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["env"] == [
        {"name": "NB2SVC_TIMEOUT", "value": "30"},
        {
            "name": "NB2SVC_API_KEY",
            "valueFrom": {"secretKeyRef": {"name": "keys", "key": "api-key", "optional": False}},
        },
    ]
    assert container["resources"]["limits"]["memory"] == "4Gi"
    default = kubernetes_objects(made_service, KubernetesOptions(IMAGE, load_seconds=1))[0]
    key_ref = default["spec"]["template"]["spec"]["containers"][0]["env"][-1]["valueFrom"]["secretKeyRef"]
    assert key_ref == {"name": "test-api-key", "key": "api-key", "optional": True}


def test_a_bad_setting_is_refused_naming_the_variable(made_service: Path) -> None:
    result = export(str(made_service), "--image", IMAGE, "--load-seconds", "1", "--env", "NB2SVC_TIMEOUT=soon")
    assert result.exit_code == 2
    assert "--env NB2SVC_TIMEOUT='soon' cannot be used: could not convert" in result.stderr
    unknown = export(str(made_service), "--image", IMAGE, "--load-seconds", "1", "--env", "NB2SVC_TIMOUT=3")
    assert unknown.exit_code == 2
    assert "NB2SVC_TIMOUT: not a setting of the service" in unknown.stderr
    key = export(str(made_service), "--image", IMAGE, "--load-seconds", "1", "--env", "NB2SVC_API_KEY=k")
    assert key.exit_code == 2
    assert "the API key comes from a Secret" in key.stderr


def test_an_invalid_name_is_refused(made_service: Path) -> None:
    for name in ("My_Model", "2model", "a" * 64, "model-"):
        result = export(str(made_service), "--image", IMAGE, "--load-seconds", "1", "--name", name)
        assert result.exit_code == 2, name
        assert f"--name {name!r} is not a valid Kubernetes name" in result.stderr
    renamed = kubernetes_objects(made_service, KubernetesOptions(IMAGE, name="lr-prod", load_seconds=1))
    assert {o["metadata"]["name"] for o in renamed} == {"lr-prod"}


@pytest.mark.network
def test_names_labels_and_selectors_agree(service_dir: Path) -> None:
    deployment, service, autoscaler, budget = kubernetes_objects(service_dir, KubernetesOptions(IMAGE, load_seconds=1))
    assert deployment["metadata"]["name"] == "linear-regression"  # the manifest's linear_regression
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    for selector in (deployment["spec"]["selector"]["matchLabels"], service["spec"]["selector"]):
        assert selector.items() <= pod_labels.items()
    assert budget["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert autoscaler["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    manifest = json.loads((service_dir / "manifest.json").read_text())
    assert deployment["metadata"]["annotations"] == {
        "nb2svc/model-version": manifest["version"],
        "nb2svc/nb2svc-version": manifest["nb2svc_version"],
    }
    assert service["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]


@pytest.mark.network
def test_the_yaml_file_holds_the_same_objects(service_dir: Path, tmp_path: Path) -> None:
    options = ("--image", IMAGE, "--load-seconds", "2")
    written = export(str(service_dir), *options, "-o", str(tmp_path / "k8s.yaml"))
    assert written.exit_code == 0, written.output
    expected = kubernetes_objects(service_dir, KubernetesOptions(IMAGE, load_seconds=2))
    assert list(yaml.safe_load_all((tmp_path / "k8s.yaml").read_text())) == expected
    kserve = export(str(service_dir), *options, "--kserve")
    assert list(yaml.safe_load_all(kserve.stdout)) == kubernetes_objects(
        service_dir, KubernetesOptions(IMAGE, load_seconds=2, kserve=True)
    )
    for resource in expected:  # as `kubernetes-validate --strict` reads the file
        assert (
            kubernetes_validate.validate_resource(resource, "k8s.yaml", KUBERNETES_VERSIONS[-1], True, True, False) == 0
        )


def test_bad_counts_and_quantities_are_refused(made_service: Path) -> None:
    fewer = export(str(made_service), "--image", IMAGE, "--load-seconds", "1", "--replicas", "3", "--max-replicas", "2")
    assert fewer.exit_code == 2
    assert "--max-replicas 2 is below --replicas 3" in fewer.stderr
    quantity = export(str(made_service), "--image", IMAGE, "--load-seconds", "1", "--memory-limit", "2GB")
    assert quantity.exit_code == 2
    assert "'2GB' is not a Kubernetes quantity" in quantity.stderr


def test_strings_that_yaml_1_2_reads_as_numbers_are_quoted() -> None:
    text = to_yaml([{"labels": {"version": "1234e5678901", "hex": "0x1f", "plain": "65a7c3", "release": "0.1.0"}}])
    assert "version: '1234e5678901'" in text
    assert "hex: '0x1f'" in text
    assert "plain: 65a7c3" in text
    assert "release: 0.1.0" in text
    assert list(yaml.safe_load_all(text))[0]["labels"]["version"] == "1234e5678901"


def test_a_directory_that_is_not_a_service_is_refused(tmp_path: Path) -> None:
    result = export(str(tmp_path), "--image", IMAGE, "--load-seconds", "1")
    assert result.exit_code == 10
    assert "is not a service directory nb2svc can export" in result.stderr
