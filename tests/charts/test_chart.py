"""The Helm chart renders offline into valid, hardened manifests that route and configure the services."""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

pytest.importorskip("helm_python", reason="helm-python-sdk (dev dependency) renders the chart")
pytest.importorskip("kubernetes_validate", reason="kubernetes-validate (dev dependency) checks the manifests")

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOL = REPO_ROOT / "tools" / "charts.py"

#: Service -> (path prefix, port, peers it calls).
SERVICES: dict[str, tuple[str, int, set[str]]] = {
    "clinical": ("/fhir", 8081, set()),
    "imaging": ("/dicomweb", 8082, {"CLINICAL"}),
    "annotations": ("/annotations/v1", 8083, {"CLINICAL", "IMAGING"}),
    "reconstruction": ("/reconstruction/v1", 8084, {"IMAGING", "ANNOTATIONS", "TRITON"}),
}
SECRET_ENV_SUFFIXES = ("DATABASE_URL", "CLIENT_SECRET", "PASSWORD", "CLIENTS", "PRIVATE_KEY")


def _load_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("oncostruct_charts_tool", TOOL)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


charts = _load_tool()


def render_objects(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Render the umbrella chart and return its objects."""
    return [manifest.obj for manifest in charts.parse_manifests(charts.render(values=values or {}))]


def by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {obj["metadata"]["name"]: obj for obj in objects if obj["kind"] == kind}


def pod_specs(objects: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for obj in objects:
        if obj["kind"] in {"Deployment", "Job"}:
            yield f"{obj['kind']}/{obj['metadata']['name']}", obj["spec"]["template"]["spec"]


def container_env(deployment: dict[str, Any]) -> dict[str, dict[str, Any]]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {item["name"]: item for item in container.get("env", [])}


@pytest.fixture(scope="module")
def default_objects() -> list[dict[str, Any]]:
    return render_objects()


@pytest.fixture(scope="module")
def everything_on() -> list[dict[str, Any]]:
    """Every optional object enabled: dev issuer, migration jobs, TLS ingress."""
    values: dict[str, Any] = {
        "devissuer": {"enabled": True},
        "ingress": {"tls": True, "className": "nginx"},
        **{name: {"migrationJob": {"enabled": True}} for name in SERVICES},
    }
    return render_objects(values)


def test_default_values_render_and_validate() -> None:
    report = charts.check_chart(charts.DEFAULT_CHART, {})

    kinds = sorted(manifest.ident for manifest in report.manifests if manifest.kind in {"Deployment", "Ingress"})
    assert kinds == [
        "Deployment/oncostruct-annotations",
        "Deployment/oncostruct-clinical",
        "Deployment/oncostruct-imaging",
        "Deployment/oncostruct-reconstruction",
        "Deployment/oncostruct-triton",
        "Ingress/oncostruct",
    ]


def test_everything_enabled_validates(everything_on: list[dict[str, Any]]) -> None:
    manifests = [charts.Manifest("test", obj) for obj in everything_on]

    assert charts.validate_manifests(manifests) == []
    assert "oncostruct-devissuer" in by_kind(everything_on, "Deployment")
    assert len(by_kind(everything_on, "Job")) == 4


def test_schema_validation_catches_a_broken_object() -> None:
    deployment = next(obj for obj in render_objects() if obj["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["timeoutSecs"] = 5

    problems = charts.validate_manifests([charts.Manifest("broken.yaml", deployment)])

    assert len(problems) == 1
    assert "timeoutSecs" in problems[0]


def test_helm_lint_is_clean() -> None:
    problems, _infos = charts.lint(charts.DEFAULT_CHART, {})

    assert problems == []


def test_pods_run_hardened(everything_on: list[dict[str, Any]]) -> None:
    checked = 0
    for where, spec in pod_specs(everything_on):
        assert spec["automountServiceAccountToken"] is False, where
        assert spec["enableServiceLinks"] is False, where
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", where
        tmp_volumes = {volume["name"] for volume in spec["volumes"] if "emptyDir" in volume}
        for container in spec.get("initContainers", []) + spec["containers"]:
            context = container["securityContext"]
            assert context["runAsNonRoot"] is True, where
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["capabilities"]["drop"] == ["ALL"], where
            assert context["seccompProfile"]["type"] == "RuntimeDefault", where
            mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
            assert mounts.get("/tmp") in tmp_volumes, f"{where}: /tmp is not a writable emptyDir"
            checked += 1
    assert checked >= 11


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_service_runs_as_image_user_with_health_probes(default_objects: list[dict[str, Any]], service: str) -> None:
    deployment = by_kind(default_objects, "Deployment")[f"oncostruct-{service}"]
    spec = deployment["spec"]["template"]["spec"]
    container = spec["containers"][0]

    assert spec["securityContext"]["runAsUser"] == 10001
    assert container["securityContext"]["runAsUser"] == 10001
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        timings = container[probe]
        assert {"initialDelaySeconds", "periodSeconds", "timeoutSeconds", "failureThreshold"} <= timings.keys()
    assert container["ports"] == [{"name": "http", "containerPort": SERVICES[service][1], "protocol": "TCP"}]
    assert container["resources"]["requests"]
    assert container["resources"]["limits"]["memory"]


def test_triton_probes_and_gpu(default_objects: list[dict[str, Any]]) -> None:
    spec = by_kind(default_objects, "Deployment")["oncostruct-triton"]["spec"]["template"]["spec"]
    container = spec["containers"][0]

    assert container["image"] == "nvcr.io/nvidia/tritonserver:24.10-py3"
    assert container["args"][:4] == [
        "--model-repository=/models",
        "--http-port=8000",
        "--grpc-port=8001",
        "--metrics-port=8002",
    ]
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert spec["initContainers"][0]["volumeMounts"][0] == {"name": "models", "mountPath": "/models"}


def test_triton_runs_on_cpu_with_an_existing_model_claim() -> None:
    objects = render_objects({"triton": {"gpu": {"enabled": False}, "modelRepository": {"existingClaim": "models"}}})
    spec = by_kind(objects, "Deployment")["oncostruct-triton"]["spec"]["template"]["spec"]

    assert "nvidia.com/gpu" not in spec["containers"][0]["resources"].get("limits", {})
    assert "nodeSelector" not in spec
    assert "tolerations" not in spec
    assert "initContainers" not in spec
    models = next(volume for volume in spec["volumes"] if volume["name"] == "models")
    assert models["persistentVolumeClaim"]["claimName"] == "models"


def test_ingress_routes_exactly_the_four_prefixes(default_objects: list[dict[str, Any]]) -> None:
    ingress = by_kind(default_objects, "Ingress")["oncostruct"]
    services = by_kind(default_objects, "Service")
    deployments = by_kind(default_objects, "Deployment")
    (rule,) = ingress["spec"]["rules"]

    routes: dict[str, tuple[str, int]] = {}
    for path in rule["http"]["paths"]:
        assert path["pathType"] == "Prefix"
        backend = path["backend"]["service"]
        service = services[backend["name"]]
        (port,) = [port for port in service["spec"]["ports"] if port["name"] == backend["port"]["name"]]
        # The Service's target port must be the container port the app listens on.
        selector = service["spec"]["selector"]
        (deployment,) = [d for d in deployments.values() if d["spec"]["selector"]["matchLabels"] == selector]
        container_ports = {
            p["name"]: p["containerPort"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
        }
        assert container_ports[port["targetPort"]] == port["port"]
        routes[path["path"]] = (backend["name"], port["port"])

    assert routes == {prefix: (f"oncostruct-{name}", port) for name, (prefix, port, _) in SERVICES.items()}
    assert rule["host"] == "oncostruct.local"
    assert not any("rewrite" in key for key in ingress["metadata"].get("annotations", {}))


def test_ingress_tls_uses_the_host_certificate(everything_on: list[dict[str, Any]]) -> None:
    ingress = by_kind(everything_on, "Ingress")["oncostruct"]

    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == [{"hosts": ["oncostruct.local"], "secretName": "oncostruct.local-tls"}]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        pytest.param(
            {"global": {"database": {"existingSecret": ""}}}, "global.database.existingSecret", id="no-database-secret"
        ),
        pytest.param({"ingress": {"hostname": ""}}, "ingress.hostname is empty", id="ingress-without-host"),
        pytest.param(
            {"triton": {"enabled": False}}, "reconstruction.upstreams.triton", id="reconstruction-without-triton"
        ),
        pytest.param({"global": {"auth": {"issuer": ""}}}, "global.auth.issuer is empty", id="no-issuer"),
        pytest.param(
            {"ingress": {"hostname": "onco.example.org"}},
            'names host "oncostruct.local" but ingress.hostname is "onco.example.org"',
            id="public-url-elsewhere",
        ),
        pytest.param(
            {"devissuer": {"enabled": True, "existingSecret": ""}},
            "set devissuer.existingSecret",
            id="devissuer-without-key",
        ),
        pytest.param(
            {"global": {"auth": {"existingSecret": ""}}},
            "global.auth.existingSecret are both empty",
            id="no-client-secret",
        ),
    ],
)
def test_validate_values_fails_readably(values: dict[str, Any], expected: str) -> None:
    with pytest.raises(charts.ChartCheckError) as caught:
        charts.render(values=values)

    message = "\n".join(caught.value.problems)
    assert "VALUES VALIDATION:" in message
    assert expected in message


def test_schema_rejects_a_misspelt_value() -> None:
    with pytest.raises(charts.ChartCheckError) as caught:
        charts.render(values={"clinical": {"replicas": 2}})

    assert "additional properties 'replicas' not allowed" in caught.value.problems[0]


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_disabling_a_service_removes_its_objects(service: str) -> None:
    values: dict[str, Any] = {service: {"enabled": False}}
    objects = render_objects(values)

    names = {obj["metadata"]["labels"].get("app.kubernetes.io/name") for obj in objects}
    assert service not in names
    assert set(SERVICES) - {service} <= names
    paths = {path["path"] for path in by_kind(objects, "Ingress")["oncostruct"]["spec"]["rules"][0]["http"]["paths"]}
    assert paths == {prefix for name, (prefix, _, _) in SERVICES.items() if name != service}


def test_no_plaintext_secrets(everything_on: list[dict[str, Any]]) -> None:
    manifests_text = yaml.safe_dump_all(everything_on)

    assert not [obj for obj in everything_on if obj["kind"] in {"Secret", "ConfigMap"}]
    assert "postgresql" not in manifests_text
    assert not re.search(r"://[^/\s:@]+:[^/\s@]+@", manifests_text), "credentials in a URL"
    for where, spec in pod_specs(everything_on):
        for container in spec["containers"]:
            for item in container.get("env", []):
                if item["name"].endswith(SECRET_ENV_SUFFIXES):
                    assert "value" not in item, f"{where}: {item['name']} is a plaintext value"
                    assert item["valueFrom"]["secretKeyRef"]["name"], where
    issuer = by_kind(everything_on, "Deployment")["oncostruct-devissuer"]["spec"]["template"]["spec"]
    (volume,) = [volume for volume in issuer["volumes"] if volume["name"] == "issuer"]
    assert volume["secret"]["secretName"] == "oncostruct-devissuer"


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_service_environment(default_objects: list[dict[str, Any]], service: str) -> None:
    prefix = f"ONCOSTRUCT_{service.upper()}_"
    env = container_env(by_kind(default_objects, "Deployment")[f"oncostruct-{service}"])

    assert all(name.startswith(prefix) for name in env)
    assert env[prefix + "DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "oncostruct-database",
        "key": "database-url",
    }
    assert env[prefix + "DB_SCHEMA"]["value"] == service
    assert env[prefix + "RUN_MIGRATIONS"]["value"] == "true"
    assert env[prefix + "AUTH_ISSUER"]["value"] == "https://auth.oncostruct.local"
    assert env[prefix + "AUTH_AUDIENCE"]["value"] == "oncostruct"
    assert env[prefix + "BASE_URL"]["value"] == "http://oncostruct.local" + SERVICES[service][0]
    peers = {name.removeprefix(prefix).removesuffix("_URL") for name in env if name.endswith("_URL")}
    assert peers - {"DATABASE", "BASE"} == SERVICES[service][2]
    if SERVICES[service][2]:
        assert env[prefix + "AUTH_CLIENT_ID"]["value"] == f"oncostruct-{service}"
        assert env[prefix + "AUTH_CLIENT_SECRET"]["valueFrom"]["secretKeyRef"]["key"] == f"{service}-client-secret"


def test_peer_urls_point_at_peer_services(default_objects: list[dict[str, Any]]) -> None:
    services = by_kind(default_objects, "Service")
    env = container_env(by_kind(default_objects, "Deployment")["oncostruct-reconstruction"])

    assert env["ONCOSTRUCT_RECONSTRUCTION_TRITON_URL"]["value"] == "oncostruct-triton:8000"
    assert {port["port"] for port in services["oncostruct-triton"]["spec"]["ports"]} == {8000, 8001, 8002}
    for peer, variable in (("imaging", "IMAGING_URL"), ("annotations", "ANNOTATIONS_URL")):
        prefix, port, _ = SERVICES[peer]
        assert env[f"ONCOSTRUCT_RECONSTRUCTION_{variable}"]["value"] == f"http://oncostruct-{peer}:{port}{prefix}"
        assert services[f"oncostruct-{peer}"]["spec"]["ports"][0]["port"] == port


@pytest.mark.parametrize("service", ["imaging", "reconstruction"])
def test_storage_services_mount_a_writable_claim(default_objects: list[dict[str, Any]], service: str) -> None:
    name = f"oncostruct-{service}"
    spec = by_kind(default_objects, "Deployment")[name]["spec"]["template"]["spec"]
    env = container_env(by_kind(default_objects, "Deployment")[name])
    mounts = {mount["name"]: mount for mount in spec["containers"][0]["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in spec["volumes"]}

    storage_path = env[f"ONCOSTRUCT_{service.upper()}_STORAGE_PATH"]["value"]
    assert mounts["storage"]["mountPath"] == storage_path
    assert not mounts["storage"].get("readOnly")
    assert volumes["storage"]["persistentVolumeClaim"]["claimName"] == name
    assert name in by_kind(default_objects, "PersistentVolumeClaim")


def test_migration_job_runs_the_service_cli(everything_on: list[dict[str, Any]]) -> None:
    job = by_kind(everything_on, "Job")["oncostruct-clinical-migrate"]
    container = job["spec"]["template"]["spec"]["containers"][0]
    deployment_env = container_env(by_kind(everything_on, "Deployment")["oncostruct-clinical"])

    assert container["command"] == ["python", "-m", "oncostruct_clinical", "migrate"]
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert deployment_env["ONCOSTRUCT_CLINICAL_RUN_MIGRATIONS"]["value"] == "false"


def test_global_image_settings_apply_to_oncostruct_images_only() -> None:
    objects = render_objects({"global": {"imageRegistry": "registry.example.org/onco", "imageTag": "1.2.3"}})
    images = {
        name: deployment["spec"]["template"]["spec"]["containers"][0]["image"]
        for name, deployment in by_kind(objects, "Deployment").items()
    }

    assert images["oncostruct-imaging"] == "registry.example.org/onco/oncostruct/imaging:1.2.3"
    assert images["oncostruct-triton"] == "nvcr.io/nvidia/tritonserver:24.10-py3"


def test_values_are_documented() -> None:
    assert charts.lint_values_docs(charts.DEFAULT_CHART) == []


def test_values_doc_lint_reports_gaps(tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(
        "## @param documented A documented value\n"
        "documented: 1\n"
        "nested:\n"
        "  undocumented: true\n"
        "## @param gone A value that no longer exists\n"
        "## @param bare\n"
        "bare: x\n",
        encoding="utf-8",
    )

    problems = "\n".join(charts.values_doc_problems(values))

    assert "nested.undocumented has no '## @param" in problems
    assert "@param gone names no key" in problems
    assert "@param bare has no description" in problems
    assert "documented:" not in problems.replace("@param documented", "")


def test_set_expressions_merge_over_values_files(tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text("ingress:\n  hostname: a.example.org\n  tls: true\n", encoding="utf-8")

    merged = charts.user_values([values], ["ingress.hostname=b.example.org", "clinical.replicaCount=2"])

    assert merged == {"ingress": {"hostname": "b.example.org", "tls": True}, "clinical": {"replicaCount": 2}}


def test_cli_renders_and_writes_manifests(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(TOOL), "--set", "devissuer.enabled=true", "--output", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("OK ")
    written = tmp_path / "oncostruct" / "charts" / "devissuer" / "templates" / "deployment.yaml"
    assert "kind: Deployment" in written.read_text(encoding="utf-8")


def test_cli_fails_readably(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(TOOL), "--set", "global.database.existingSecret=", "--output", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )

    assert result.returncode == 1
    assert "FAILED render" in result.stderr
    assert "global.database.existingSecret" in result.stderr
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("service", sorted(set(SERVICES) - {"clinical"}))
def test_service_subcharts_share_one_set_of_templates(service: str) -> None:
    """The four service subcharts differ only in their values and helper prefix."""
    subcharts = charts.DEFAULT_CHART / "charts"

    def normalised(name: str, template: Path) -> str:
        text = template.read_text(encoding="utf-8")
        return text.replace(f'"{name}.', '"SERVICE.').replace(f"of the {name} subchart", "of the SERVICE subchart")

    reference = {path.name: normalised("clinical", path) for path in (subcharts / "clinical" / "templates").iterdir()}
    templates = {path.name: normalised(service, path) for path in (subcharts / service / "templates").iterdir()}

    assert templates == reference


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_chart_settings_are_real_service_settings(service: str) -> None:
    """Every `settings.<name>` a subchart ships becomes an env var the service reads, with a value it accepts."""
    values = yaml.safe_load((charts.DEFAULT_CHART / "charts" / service / "values.yaml").read_text(encoding="utf-8"))
    module = importlib.import_module(f"oncostruct_{service}.config")
    fields = module.Settings.model_fields
    for name in values["settings"]:
        field = re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
        assert field in fields, f"{service}: settings.{name} is not a setting"
    env = {
        f"ONCOSTRUCT_{service.upper()}_{re.sub(r'(?<!^)(?=[A-Z])', '_', name).upper()}": (
            json.dumps(value)
            if isinstance(value, list)
            else str(value).lower()
            if isinstance(value, bool)
            else str(value)
        )
        for name, value in values["settings"].items()
    }
    with pytest.MonkeyPatch.context() as patch:
        for key, text in env.items():
            patch.setenv(key, text)
        module.Settings()  # parses every shipped value
