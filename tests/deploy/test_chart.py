"""The Helm chart: renders, lints, keeps its schema, and produces valid Kubernetes objects.

Rendering and linting use the Helm SDK bundled in the PyPI package helm-python-sdk (no helm
binary, no cluster); every rendered object is checked by `kubernetes-validate --strict`.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "mailstack"
KITCHENSINK = Path(__file__).with_name("values-kitchensink.yaml")
RELEASE = "mail"
NAMESPACE = "mail"
FULLNAME = "mail-mailstack"
# The oldest and the newest Kubernetes whose schemas kubernetes-validate ships.
KUBE_VERSIONS = ("1.25.0", "1.37.0")
WRITABLE_PATHS = {
    "/etc/postfix",
    "/var/spool/postfix",
    "/var/lib/postfix",
    "/etc/opendkim",
    "/run/mailstack",
    "/tmp",
}

Manifest = dict[str, Any]


def kitchensink() -> dict[str, Any]:
    return yaml.safe_load(KITCHENSINK.read_text())


# Value sets that each take a different branch of the templates.
VALUE_SETS: dict[str, dict[str, Any]] = {
    "default": {},
    "kitchensink": kitchensink(),
    "no-persistence": {"persistence": {"enabled": False}},
    "existing-claim": {"persistence": {"existingClaim": "{{ .Release.Name }}-queue"}},
    "dkim-keys-on-volume": {"persistence": {"dkimKeys": True, "storageClass": "-"}},
    "no-service-account": {
        "serviceAccount": {"create": False},
        "headlessService": {"enabled": False},
    },
    "existing-cert": {"certs": {"existingSecret": "relay-tls"}},
    # boky/postfix's chart spellings: certs.create as {}, container.postfix.securityContext,
    # extra* values as tpl strings.
    "boky-style": {
        "certs": {"create": {}},
        "container": {"postfix": {"securityContext": {"readOnlyRootFilesystem": True}}},
        "service": {"type": "LoadBalancer", "nodePort": 30587},
        "extraEnv": "- name: RELEASE_NAME\n  value: {{ .Release.Name | quote }}\n",
        "extraVolumes": "- name: scratch\n  emptyDir: {}\n",
        "extraVolumeMounts": "- name: scratch\n  mountPath: /scratch\n",
    },
    "metrics-only": {"metrics": {"enabled": True}, "networkPolicy": {"enabled": True}},
}


def render(values: dict[str, Any], revision: int = 1) -> list[Manifest]:
    """Every object the chart renders for `values` (NOTES.txt left out)."""
    with helm.Chart.load(CHART) as chart:
        rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE, revision=revision)
    manifests = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        manifests += [doc for doc in yaml.safe_load_all(text) if doc]
    return manifests


def find(manifests: list[Manifest], kind: str, name: str | None = None) -> list[Manifest]:
    return [
        m
        for m in manifests
        if m["kind"] == kind and (name is None or m["metadata"]["name"] == name)
    ]


def one(manifests: list[Manifest], kind: str, name: str | None = None) -> Manifest:
    found = find(manifests, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {len(found)}"
    return found[0]


def container(manifests: list[Manifest], name: str = "mailstack") -> dict[str, Any]:
    pod = one(manifests, "StatefulSet")["spec"]["template"]["spec"]
    return next(c for c in pod["containers"] if c["name"] == name)


def mounts(manifests: list[Manifest]) -> dict[str, dict[str, Any]]:
    return {m["mountPath"]: m for m in container(manifests)["volumeMounts"]}


def kubernetes_validate() -> str:
    beside = Path(sys.executable).with_name("kubernetes-validate")
    found = str(beside) if beside.exists() else shutil.which("kubernetes-validate")
    assert found, "kubernetes-validate is not installed (pip install kubernetes-validate)"
    return found


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_lint_finds_no_errors(values: dict[str, Any]) -> None:
    """`helm lint --strict` (which also applies values.schema.json) reports nothing wrong."""
    report = helm.lint(CHART, values, strict=True)
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_values_satisfy_the_schema(values: dict[str, Any]) -> None:
    """The value sets the tests use are valid values, so the schema is not too strict."""
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema(values)


@pytest.mark.parametrize(
    ("values", "names"),
    [
        ({"replicaCount": "two"}, "/replicaCount"),
        ({"replicas": 2}, "replicas"),
        ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
        ({"service": {"port": 70000}}, "/service/port"),
        ({"config": {"postfix": {"myhostname": {"nested": "map"}}}}, "/config/postfix/myhostname"),
        ({"persistence": {"size": "lots"}}, "/persistence/size"),
        ({"networkPolicy": {"enabled": "yes"}}, "/networkPolicy/enabled"),
    ],
)
def test_schema_rejects_bad_values(values: dict[str, Any], names: str) -> None:
    """A wrong type, an unknown key or a bad enum is refused, naming the value."""
    with helm.Chart.load(CHART) as chart:
        with pytest.raises(helm.HelmValuesError, match=names):
            chart.validate_schema(values)
        with pytest.raises(helm.HelmValuesError):
            chart.render(values, name=RELEASE, namespace=NAMESPACE)


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_manifests_are_valid_kubernetes_objects(
    values: dict[str, Any], kube_version: str, tmp_path: Path
) -> None:
    """`kubernetes-validate --strict` accepts every object; only the ServiceMonitor (a CRD) is
    unknown to it, which it reports as a warning."""
    manifests = render(values)
    target = tmp_path / "manifests.yaml"
    target.write_text(yaml.safe_dump_all(manifests))
    result = subprocess.run(
        [kubernetes_validate(), "--strict", "-k", kube_version, str(target)],
        capture_output=True,
        text=True,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    warnings = [line for line in output.splitlines() if line.startswith("WARN")]
    assert all("ServiceMonitor" in line for line in warnings), warnings
    passed = [line for line in output.splitlines() if " passed for resource " in line]
    assert len(passed) == len([m for m in manifests if m["kind"] != "ServiceMonitor"])


# boky/postfix's chart table (seed 000): every property, with its default. Two defaults differ
# on purpose: the image is mailstack's, and certs.create is the boolean false ({} is accepted).
SEED_DEFAULTS: dict[str, Any] = {
    "replicaCount": 1,
    "image.repository": "localhost/mailstack",
    "image.tag": "",
    "image.pullPolicy": "IfNotPresent",
    "imagePullSecrets": [],
    "nameOverride": "",
    "fullnameOverride": "",
    "serviceAccount.create": True,
    "serviceAccount.annotations": {},
    "serviceAccount.name": "",
    "service.type": "ClusterIP",
    "service.port": 587,
    "service.labels": {},
    "service.annotations": {},
    "service.spec": {},
    "service.nodePort": "",
    "service.nodeIP": "",
    "resources": {},
    "autoscaling.enabled": False,
    "autoscaling.minReplicas": 1,
    "autoscaling.maxReplicas": 100,
    "autoscaling.targetCPUUtilizationPercentage": 80,
    "autoscaling.targetMemoryUtilizationPercentage": "",
    "autoscaling.labels": {},
    "autoscaling.annotations": {},
    "nodeSelector": {},
    "tolerations": [],
    "affinity": {},
    "certs.create": False,
    "extraVolumes": [],
    "extraVolumeMounts": [],
    "extraInitContainers": [],
    "extraEnv": [],
    "extraContainers": [],
    "deployment.labels": {},
    "deployment.annotations": {},
    "pod.securityContext": {},
    "pod.labels": {},
    "pod.annotations": {},
    "container.postfixsecurityContext": {},
    "config.general": {},
    "config.postfix": {},
    "config.opendkim": {},
    "secret": {},
    "persistence.enabled": True,
    "persistence.accessModes": ["ReadWriteOnce"],
    "persistence.existingClaim": "",
    "persistence.size": "1Gi",
    "persistence.storageClass": "",
    "recreateOnRedeploy": True,
}


def test_every_boky_chart_property_exists_with_its_default() -> None:
    """A values file written for boky/postfix's chart means the same here."""
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    for dotted, expected in SEED_DEFAULTS.items():
        node: Any = defaults
        for part in dotted.split("."):
            assert isinstance(node, dict), dotted
            assert part in node, f"{dotted} is missing from values.yaml"
            node = node[part]
        assert node == expected, dotted
    schema = yaml.safe_load((CHART / "values.schema.json").read_text())
    for dotted in SEED_DEFAULTS:
        node = schema
        for part in dotted.split("."):
            node = node["properties"][part]


def test_queue_is_on_a_persistent_volume_claim() -> None:
    """By default each pod's /var/spool/postfix is its own PVC (volumeClaimTemplates)."""
    manifests = render({})
    statefulset = one(manifests, "StatefulSet", FULLNAME)
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    spool = mounts(manifests)["/var/spool/postfix"]
    assert spool["name"] == claim["metadata"]["name"]
    volumes = statefulset["spec"]["template"]["spec"]["volumes"]
    assert spool["name"] not in {v["name"] for v in volumes}


def test_queue_is_an_emptydir_without_persistence() -> None:
    manifests = render({"persistence": {"enabled": False}})
    statefulset = one(manifests, "StatefulSet")
    assert "volumeClaimTemplates" not in statefulset["spec"]
    volumes = {v["name"]: v for v in statefulset["spec"]["template"]["spec"]["volumes"]}
    assert "emptyDir" in volumes[mounts(manifests)["/var/spool/postfix"]["name"]]


def test_existing_claim_is_a_template() -> None:
    manifests = render({"persistence": {"existingClaim": "{{ .Release.Name }}-queue"}})
    statefulset = one(manifests, "StatefulSet")
    assert "volumeClaimTemplates" not in statefulset["spec"]
    volumes = {v["name"]: v for v in statefulset["spec"]["template"]["spec"]["volumes"]}
    queue = volumes[mounts(manifests)["/var/spool/postfix"]["name"]]
    assert queue["persistentVolumeClaim"]["claimName"] == "mail-queue"


def test_config_values_become_environment_variables() -> None:
    """config.general verbatim, config.postfix as POSTFIX_<key>, config.opendkim as
    OPENDKIM_<key>, all through the ConfigMap the container takes its environment from."""
    manifests = render(
        {
            "config": {
                "general": {"ALLOWED_SENDER_DOMAINS": "example.com", "DKIM_AUTOGENERATE": 1},
                "postfix": {"myhostname": "demo", "message_size_limit": 10240000},
                "opendkim": {"RequireSafeKeys": "yes"},
            }
        }
    )
    data = one(manifests, "ConfigMap", FULLNAME)["data"]
    assert data == {
        "ALLOWED_SENDER_DOMAINS": "example.com",
        "DKIM_AUTOGENERATE": "1",
        "POSTFIX_myhostname": "demo",
        "POSTFIX_message_size_limit": "10240000",
        "OPENDKIM_RequireSafeKeys": "yes",
    }
    assert {"configMapRef": {"name": FULLNAME}} in container(manifests)["envFrom"]


def test_secret_values_reach_the_container_only_through_a_secret() -> None:
    password = "s3cret-relay-password"
    manifests = render({"secret": {"RELAYHOST_PASSWORD": password}, "existingSecret": "oauth"})
    secret = one(manifests, "Secret", FULLNAME)
    assert base64.b64decode(secret["data"]["RELAYHOST_PASSWORD"]).decode() == password
    env_from = container(manifests)["envFrom"]
    assert {"secretRef": {"name": FULLNAME}} in env_from
    assert {"secretRef": {"name": "oauth"}} in env_from
    others = [m for m in manifests if m["kind"] != "Secret"]
    assert password not in yaml.safe_dump_all(others)


def test_no_secret_object_without_secret_values() -> None:
    manifests = render({})
    assert find(manifests, "Secret") == []
    assert all("secretRef" not in ref for ref in container(manifests)["envFrom"])


def test_probes_run_mailstack_health() -> None:
    probes = container(render({}))
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert probes[probe]["exec"]["command"] == ["mailstack", "health"], probe


def prestop_script(manifests: list[Manifest]) -> str:
    command = container(manifests)["lifecycle"]["preStop"]["exec"]["command"]
    assert command[:2] == ["/bin/sh", "-c"]
    return command[2]


def test_prestop_flushes_the_queue_within_the_grace_period() -> None:
    manifests = render({"terminationGracePeriodSeconds": 90, "preStopSleepSeconds": 5})
    pod = one(manifests, "StatefulSet")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 90
    script = prestop_script(manifests)
    assert script.startswith("sleep 5\n")
    assert "postqueue -c /etc/postfix -f" in script
    assert "Mail queue is empty" in script
    # 90 s grace - 5 s sleep - 15 s left for mailstack's own stop
    assert "+ 70 ))" in script
    check = subprocess.run(["sh", "-n", "-c", script], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stderr


def test_writable_paths_are_volumes_for_a_read_only_root() -> None:
    """Every path mailstack writes is a volume, and /etc/postfix gets Postfix's own files back
    from the image before mailstack starts."""
    manifests = render({"container": {"postfixsecurityContext": {"readOnlyRootFilesystem": True}}})
    assert set(mounts(manifests)) >= WRITABLE_PATHS
    assert container(manifests)["securityContext"] == {"readOnlyRootFilesystem": True}
    pod = one(manifests, "StatefulSet")["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    assert init["command"][:2] == ["cp", "-a"]
    assert init["volumeMounts"] == [{"name": "postfix-config", "mountPath": "/etc/postfix"}]


def test_both_security_context_spellings_are_merged() -> None:
    manifests = render(
        {
            "container": {
                "postfixsecurityContext": {"readOnlyRootFilesystem": True},
                "postfix": {"securityContext": {"allowPrivilegeEscalation": False}},
            }
        }
    )
    assert container(manifests)["securityContext"] == {
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
    }


def test_network_policy_only_when_enabled() -> None:
    assert find(render({}), "NetworkPolicy") == []
    manifests = render(
        {
            "networkPolicy": {
                "enabled": True,
                "namespaceSelector": {"matchLabels": {"mail-clients": "true"}},
                "podSelector": {"matchLabels": {"sends-mail": "true"}},
            }
        }
    )
    policy = one(manifests, "NetworkPolicy", FULLNAME)["spec"]
    assert policy["policyTypes"] == ["Ingress"]
    (rule,) = policy["ingress"]
    assert rule["ports"] == [{"port": "smtp", "protocol": "TCP"}]
    assert rule["from"] == [
        {
            "namespaceSelector": {"matchLabels": {"mail-clients": "true"}},
            "podSelector": {"matchLabels": {"sends-mail": "true"}},
        }
    ]
    selector = policy["podSelector"]["matchLabels"]
    assert selector == one(manifests, "StatefulSet")["spec"]["selector"]["matchLabels"]


def test_network_policy_defaults_to_the_release_namespace() -> None:
    policy = one(render({"networkPolicy": {"enabled": True}}), "NetworkPolicy")["spec"]
    assert policy["ingress"][0]["from"] == [{"podSelector": {}}]


def test_metrics_listener_service_and_service_monitor() -> None:
    manifests = render(
        {"metrics": {"enabled": True, "port": 9100}, "serviceMonitor": {"enabled": True}}
    )
    data = one(manifests, "ConfigMap", FULLNAME)["data"]
    assert data["MAILSTACK_METRICS_LISTEN"] == "0.0.0.0:9100"
    ports = {p["name"]: p["containerPort"] for p in container(manifests)["ports"]}
    assert ports == {"smtp": 587, "metrics": 9100}
    service = one(manifests, "Service", f"{FULLNAME}-metrics")
    monitor = one(manifests, "ServiceMonitor", FULLNAME)
    labels = service["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"


def test_metrics_off_by_default() -> None:
    manifests = render({})
    assert "MAILSTACK_METRICS_LISTEN" not in one(manifests, "ConfigMap")["data"]
    assert find(manifests, "ServiceMonitor") == []
    assert find(manifests, "Service", f"{FULLNAME}-metrics") == []


def test_service_monitor_needs_metrics() -> None:
    with pytest.raises(helm.HelmRenderError, match=r"metrics\.enabled"):
        render({"serviceMonitor": {"enabled": True}})


def test_redeploy_and_config_changes_restart_pods() -> None:
    """recreateOnRedeploy: a new release revision changes the pod template; a config change
    does so in any case (checksum annotation)."""

    def annotations(values: dict[str, Any], revision: int) -> dict[str, str]:
        statefulset = one(render(values, revision), "StatefulSet")
        return statefulset["spec"]["template"]["metadata"]["annotations"]

    assert annotations({}, 1) != annotations({}, 2)
    fixed = {"recreateOnRedeploy": False}
    assert annotations(fixed, 1) == annotations(fixed, 2)
    changed = {**fixed, "config": {"postfix": {"myhostname": "other"}}}
    assert (
        annotations(fixed, 1)["checksum/configmap"] != annotations(changed, 1)["checksum/configmap"]
    )


def test_certs_create_offers_starttls_with_a_generated_certificate() -> None:
    manifests = render({"certs": {"create": True}})
    secret = one(manifests, "Secret", f"{FULLNAME}-certs")
    assert secret["type"] == "kubernetes.io/tls"
    assert secret["metadata"]["annotations"]["helm.sh/hook"] == "pre-install"
    data = one(manifests, "ConfigMap")["data"]
    assert data["POSTFIX_smtpd_tls_security_level"] == "may"
    directory = "/etc/mailstack/certs"
    assert data["POSTFIX_smtpd_tls_chain_files"] == f"{directory}/tls.key, {directory}/tls.crt"
    assert mounts(manifests)[directory]["readOnly"] is True


def test_service_exposes_submission() -> None:
    manifests = render({"service": {"type": "NodePort", "nodePort": 31587, "nodeIP": "192.0.2.1"}})
    service = one(manifests, "Service", FULLNAME)["spec"]
    assert service["ports"] == [
        {"name": "smtp", "port": 587, "targetPort": "smtp", "protocol": "TCP", "nodePort": 31587}
    ]
    assert service["externalIPs"] == ["192.0.2.1"]
    headless = one(manifests, "Service", f"{FULLNAME}-headless")["spec"]
    assert headless["clusterIP"] == "None"
    assert one(manifests, "StatefulSet")["spec"]["serviceName"] == f"{FULLNAME}-headless"


def test_kitchensink_uses_every_option() -> None:
    """The kitchen-sink values set every top-level value and every seed property."""
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    values = kitchensink()
    assert set(values) == set(defaults)
    for dotted in SEED_DEFAULTS:
        node: Any = values
        for part in dotted.split("."):
            node = node[part]
    manifests = render(values)
    kinds = {m["kind"] for m in manifests}
    assert kinds == {
        "ConfigMap",
        "HorizontalPodAutoscaler",
        "NetworkPolicy",
        "Secret",
        "Service",
        "ServiceAccount",
        "ServiceMonitor",
        "StatefulSet",
    }
    assert "replicas" not in one(manifests, "StatefulSet")["spec"]  # the HPA owns it
