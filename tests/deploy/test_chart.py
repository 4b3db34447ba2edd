"""The Helm chart: renders, lints, keeps its schema, and produces valid Kubernetes objects.

Rendering and linting use the Helm SDK bundled in the PyPI package helm-python-sdk (no helm
binary, no cluster); every rendered object is checked by `kubernetes-validate --strict`.
One test (marker `image`) runs the rendered server pod's container with podman.
"""

from __future__ import annotations

import base64
import imaplib
import shutil
import smtplib
import socket
import ssl
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import test_image
import yaml
from test_image import free_port, podman

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
        # boky/postfix's deprecated spelling of mynetworks; an exposed relay needs one
        "config": {"general": {"MYNETWORKS": "10.42.0.0/16"}},
        "extraEnv": "- name: RELEASE_NAME\n  value: {{ .Release.Name | quote }}\n",
        "extraVolumes": "- name: scratch\n  emptyDir: {}\n",
        "extraVolumeMounts": "- name: scratch\n  mountPath: /scratch\n",
    },
    "metrics-only": {"metrics": {"enabled": True}, "networkPolicy": {"enabled": True}},
}


def notes(values: dict[str, Any]) -> str:
    """The NOTES.txt the chart prints for `values`."""
    with helm.Chart.load(CHART) as chart:
        rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE)
    return next(text for path, text in rendered.items() if path.endswith("NOTES.txt"))


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
    manifests = render(
        {
            "service": {"type": "NodePort", "nodePort": 31587, "nodeIP": "192.0.2.1"},
            "config": {"postfix": {"mynetworks": "10.42.0.0/16"}},
        }
    )
    service = one(manifests, "Service", FULLNAME)["spec"]
    assert service["ports"] == [
        {"name": "smtp", "port": 587, "targetPort": "smtp", "protocol": "TCP", "nodePort": 31587}
    ]
    assert service["externalIPs"] == ["192.0.2.1"]
    headless = one(manifests, "Service", f"{FULLNAME}-headless")["spec"]
    assert headless["clusterIP"] == "None"
    assert one(manifests, "StatefulSet")["spec"]["serviceName"] == f"{FULLNAME}-headless"


# -- The relay's trust boundary -------------------------------------------------------------

# The relay lets every client in mynetworks send without a login; by default that is every
# private address. Services that clients outside the cluster reach through a node, where they
# arrive with a private address (externalTrafficPolicy: Cluster, or a proxying load balancer).
# Each with how the refusal names it.
EXPOSED: dict[str, tuple[dict[str, Any], str]] = {
    "load-balancer": ({"type": "LoadBalancer"}, "(type LoadBalancer)"),
    "node-port": ({"type": "NodePort", "nodePort": 31587}, "(type NodePort)"),
    "node-ip": ({"nodeIP": "192.0.2.1"}, "(externalIPs)"),
    "spec-external-ips": ({"spec": {"externalIPs": ["192.0.2.2"]}}, "(externalIPs)"),
    "spec-type": ({"spec": {"type": "LoadBalancer"}}, "(type LoadBalancer)"),
    # still refused: a proxying load balancer connects from its own private address whatever
    # the traffic policy, and not every provider enforces source ranges
    "load-balancer-local": (
        {
            "type": "LoadBalancer",
            "nodeIP": "192.0.2.1",
            "spec": {
                "externalTrafficPolicy": "Local",
                "loadBalancerSourceRanges": ["198.51.100.0/24"],
            },
        },
        "(type LoadBalancer, externalIPs)",
    ),
}
DEFAULT_NETWORKS = "127.0.0.0/8,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16"
NETWORKS = "10.42.0.0/16, 192.0.2.0/24"
# Every way the values can set the container's mynetworks.
MYNETWORKS_VALUES: dict[str, dict[str, Any]] = {
    "config-postfix": {"config": {"postfix": {"mynetworks": NETWORKS}}},
    "config-general": {"config": {"general": {"POSTFIX_mynetworks": NETWORKS}}},
    "config-general-alias": {"config": {"general": {"MYNETWORKS": NETWORKS}}},
    "secret": {"secret": {"POSTFIX_mynetworks": NETWORKS}},
    "extra-env": {"extraEnv": [{"name": "POSTFIX_mynetworks", "value": NETWORKS}]},
    "extra-env-template": {"extraEnv": f"- name: MYNETWORKS\n  value: {NETWORKS!r}\n"},
}


def refusal(values: dict[str, Any]) -> str:
    """The message the chart fails with for `values`."""
    with pytest.raises(helm.HelmRenderError) as failure:
        render(values)
    return str(failure.value)


@pytest.mark.parametrize(("service", "exposure"), EXPOSED.values(), ids=EXPOSED.keys())
def test_exposed_relay_without_mynetworks_is_refused(
    service: dict[str, Any], exposure: str
) -> None:
    """A LoadBalancer, a NodePort or external IPs with the default mynetworks would be an open
    relay: rendering fails, naming the exposure and the values that fix it."""
    message = refusal({"service": service})
    assert f"reachable from outside the cluster {exposure}" in message
    assert "every private address (RFC 1918)" in message
    assert "Set config.postfix.mynetworks" in message
    assert "networkPolicy.enabled: true" in message
    assert refusal({"service": service, "networkPolicy": {"enabled": False}}) == message


@pytest.mark.parametrize("values", MYNETWORKS_VALUES.values(), ids=MYNETWORKS_VALUES.keys())
@pytest.mark.parametrize("service", ["LoadBalancer", "NodePort"])
def test_exposed_relay_renders_with_explicit_mynetworks(
    values: dict[str, Any], service: str
) -> None:
    """mynetworks set by any of the values that reach the container allows an exposed
    Service, and NOTES.txt names those networks as the ones that may send."""
    exposed = {**values, "service": {"type": service, "nodeIP": "192.0.2.1"}}
    manifests = render(exposed)
    assert one(manifests, "Service", FULLNAME)["spec"]["type"] == service
    assert find(manifests, "NetworkPolicy") == []
    text = notes(exposed)
    assert NETWORKS in text
    assert "RFC 1918" not in text


def test_exposed_relay_renders_with_mynetworks_from_a_reference() -> None:
    """An extraEnv valueFrom cannot be read when rendering; it is explicit all the same."""
    source = {"configMapKeyRef": {"name": "relay-clients", "key": "networks"}}
    values = {
        "service": {"type": "LoadBalancer"},
        "extraEnv": [{"name": "POSTFIX_mynetworks", "valueFrom": source}],
    }
    assert one(render(values), "Service", FULLNAME)["spec"]["type"] == "LoadBalancer"
    assert "set by extraEnv POSTFIX_mynetworks (valueFrom)" in notes(values)


@pytest.mark.parametrize(
    "values",
    [
        {"config": {"postfix": {"mynetworks": ""}}},
        {"config": {"general": {"MYNETWORKS": "  "}}},
        # env beats envFrom, and an empty value means the image's default
        {
            "config": {"postfix": {"mynetworks": NETWORKS}},
            "extraEnv": [{"name": "POSTFIX_mynetworks", "value": ""}],
        },
        # the chart's Secret comes after the ConfigMap
        {
            "config": {"postfix": {"mynetworks": NETWORKS}},
            "secret": {"POSTFIX_mynetworks": ""},
        },
    ],
    ids=["empty", "blank-alias", "emptied-by-extra-env", "emptied-by-secret"],
)
def test_empty_mynetworks_is_the_default(values: dict[str, Any]) -> None:
    """A mynetworks the container sees as empty is the default one: still refused."""
    assert "RFC 1918" in refusal({**values, "service": {"type": "LoadBalancer"}})


def test_mynetworks_in_effect_follows_the_pods_precedence() -> None:
    """NOTES.txt shows the value the container gets: extraEnv over the chart's Secret over the
    ConfigMap (config.postfix over config.general), MYNETWORKS over POSTFIX_mynetworks."""
    config = {"postfix": {"mynetworks": "10.1.0.0/16"}, "general": {"POSTFIX_mynetworks": "x"}}
    assert "  10.1.0.0/16\n" in notes({"config": config})
    secret = {"MYNETWORKS": "10.2.0.0/16"}
    assert "  10.2.0.0/16\n" in notes({"config": config, "secret": secret})
    extra = [{"name": "POSTFIX_mynetworks", "value": "10.3.0.0/16"}]
    assert "  10.2.0.0/16\n" in notes({"config": config, "secret": secret, "extraEnv": extra})
    assert "  10.3.0.0/16\n" in notes({"config": config, "extraEnv": extra})


def test_exposed_relay_renders_with_the_network_policy() -> None:
    """The NetworkPolicy admits only the chosen peers to the submission port: with it, the
    default mynetworks may stay behind a LoadBalancer."""
    values = {"service": {"type": "LoadBalancer"}, "networkPolicy": {"enabled": True}}
    manifests = render(values)
    assert one(manifests, "Service", FULLNAME)["spec"]["type"] == "LoadBalancer"
    (rule,) = one(manifests, "NetworkPolicy", FULLNAME)["spec"]["ingress"]
    assert rule["from"] == [{"podSelector": {}}]
    text = notes(values)
    assert "every private address (RFC 1918)" in text
    assert f"NetworkPolicy {FULLNAME} admits" in text


def test_default_cluster_ip_renders_unchanged() -> None:
    """The default Service (ClusterIP) needs nothing: the chart passes no mynetworks (the
    image keeps boky/postfix's default) and adds no NetworkPolicy."""
    manifests = render({})
    assert one(manifests, "Service", FULLNAME)["spec"]["type"] == "ClusterIP"
    assert one(manifests, "ConfigMap", FULLNAME)["data"] == {}
    assert "env" not in container(manifests)
    assert find(manifests, "NetworkPolicy") == []
    assert render({"service": {"type": "ClusterIP"}, "networkPolicy": {"enabled": False}}) == (
        manifests
    )


def test_notes_say_who_may_send() -> None:
    """NOTES.txt names the networks that may send, the default by what it means, and what
    exposing the Service needs."""
    text = notes({})
    assert "Who may send (no login): clients whose address is in mynetworks" in text
    assert "every private address (RFC 1918)" in text
    assert DEFAULT_NETWORKS in text
    assert "needs config.postfix.mynetworks or" in text
    assert "networkPolicy.enabled: true" in text
    assert "NetworkPolicy" not in text.split("Exposing")[0]
    hidden = notes({"existingSecret": "{{ .Release.Name }}-env"})
    assert "Secret mail-env is not read here" in hidden


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


# -- The server profile (profile: server) ---------------------------------------------------

SERVER_KITCHENSINK = Path(__file__).with_name("values-server.yaml")
# The server's listeners: port names (container, Service, NetworkPolicy) and container ports.
SERVER_PORTS = {
    "smtp": 25,
    "submission": 587,
    "submissions": 465,
    "imap": 143,
    "imaps": 993,
    "managesieve": 4190,
    "http": 80,
    "https": 443,
}
SERVER_WRITABLE_PATHS = WRITABLE_PATHS | {"/etc/mailstack", "/var/lib/mailstack"}
CERT_DIR = "/etc/mailstack/certs"
READ_ONLY_ROOT = {"container": {"postfixsecurityContext": {"readOnlyRootFilesystem": True}}}


def server_kitchensink() -> dict[str, Any]:
    return yaml.safe_load(SERVER_KITCHENSINK.read_text())


def server(**values: Any) -> dict[str, Any]:
    """Values with profile: server."""
    return {"profile": "server", **values}


SERVER_VALUE_SETS: dict[str, dict[str, Any]] = {
    "server-default": server(),
    "server-kitchensink": server_kitchensink(),
    "server-read-only-policy-metrics": server(
        **READ_ONLY_ROOT,
        metrics={"enabled": True},
        networkPolicy={"enabled": True},
        service={"type": "NodePort"},
        server={"service": {"nodePorts": {"smtp": 30025, "submission": 30587}}},
    ),
    "server-no-persistence": server(
        persistence={"enabled": False},
        server={"persistence": {"enabled": False}},
    ),
    "server-existing-claim-secrets": server(
        server={
            "persistence": {"existingClaim": "{{ .Release.Name }}-mail", "dkimKeys": False},
            "tls": {"secretName": "mx-tls"},
            "database": {"existingSecret": "{{ .Release.Name }}-db"},
        },
    ),
}


def env_vars(manifests: list[Manifest]) -> dict[str, dict[str, Any]]:
    """The mailstack container's `env` entries by name."""
    return {e["name"]: e for e in container(manifests).get("env", [])}


def pod_volumes(manifests: list[Manifest]) -> dict[str, dict[str, Any]]:
    return {
        v["name"]: v for v in one(manifests, "StatefulSet")["spec"]["template"]["spec"]["volumes"]
    }


def claim_templates(manifests: list[Manifest]) -> dict[str, dict[str, Any]]:
    templates = one(manifests, "StatefulSet")["spec"].get("volumeClaimTemplates", [])
    return {t["metadata"]["name"]: t for t in templates}


def service_ports(service: Manifest) -> dict[str, tuple[int, str]]:
    return {p["name"]: (p["port"], p["targetPort"]) for p in service["spec"]["ports"]}


@pytest.mark.parametrize("values", SERVER_VALUE_SETS.values(), ids=SERVER_VALUE_SETS.keys())
def test_server_lint_schema_and_mounts(values: dict[str, Any]) -> None:
    """The server value sets lint clean and satisfy the schema (the relay's checks), and every
    mount names a volume of the pod or a claim template, each path once (the API server
    refuses duplicates; kubernetes-validate does not look)."""
    test_lint_finds_no_errors(values)
    test_values_satisfy_the_schema(values)
    manifests = render(values)
    paths = [m["mountPath"] for m in container(manifests)["volumeMounts"]]
    assert len(paths) == len(set(paths)), paths
    known = set(pod_volumes(manifests)) | set(claim_templates(manifests))
    assert {m["name"] for m in container(manifests)["volumeMounts"]} <= known


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("values", SERVER_VALUE_SETS.values(), ids=SERVER_VALUE_SETS.keys())
def test_server_manifests_are_valid_kubernetes_objects(
    values: dict[str, Any], kube_version: str, tmp_path: Path
) -> None:
    """`kubernetes-validate --strict`, exactly as for the relay's value sets."""
    test_manifests_are_valid_kubernetes_objects(values, kube_version, tmp_path)


@pytest.mark.parametrize(
    ("values", "names"),
    [
        ({"profile": "mail"}, "/profile"),
        ({"profile": "Server"}, "/profile"),
        ({"server": {"service": {"ports": {"imap": 70000}}}}, "/server/service/ports/imap"),
        ({"server": {"service": {"ports": {"pop3": 110}}}}, "pop3"),
        ({"server": {"service": {"nodePorts": {"smtp": "30025"}}}}, "/server/service/nodePorts"),
        ({"server": {"persistence": {"size": "plenty"}}}, "/server/persistence/size"),
        ({"server": {"database": {"key": ""}}}, "/server/database/key"),
        ({"server": {"database": {"url": "postgresql://u:p@db/mail"}}}, "url"),
        ({"server": {"tls": {"secretName": 7}}}, "/server/tls/secretName"),
    ],
)
def test_schema_rejects_bad_server_values(values: dict[str, Any], names: str) -> None:
    """A profile other than relay/server, and wrong server values, are refused by name; there
    is no value for a plain-text database URL."""
    test_schema_rejects_bad_values(values, names)


def test_server_profile_sets_the_environment_and_the_ports() -> None:
    """MAILSTACK_PROFILE=server in the container's own env (it wins over config.general and
    the Secrets), every listener a named container port, all of them on the Service and the
    headless Service."""
    manifests = render(server(config={"general": {"MAILSTACK_PROFILE": "relay"}}))
    assert env_vars(manifests)["MAILSTACK_PROFILE"] == {
        "name": "MAILSTACK_PROFILE",
        "value": "server",
    }
    ports = container(manifests)["ports"]
    assert {p["name"]: p["containerPort"] for p in ports} == SERVER_PORTS
    assert all(len(p["name"]) <= 15 and p["protocol"] == "TCP" for p in ports)
    expected = {name: (port, name) for name, port in SERVER_PORTS.items()}
    assert service_ports(one(manifests, "Service", FULLNAME)) == expected
    assert service_ports(one(manifests, "Service", f"{FULLNAME}-headless")) == expected
    assert "nodePort" not in str(one(manifests, "Service", FULLNAME)["spec"]["ports"])


def test_server_service_ports_can_move_or_be_left_out() -> None:
    """server.service.ports maps a Service port onto each container port; null leaves a port
    out of the Service and the NetworkPolicy (the container still listens); nodePorts are
    set only for NodePort/LoadBalancer Services."""
    values = server(
        service={"type": "NodePort", "port": 2587, "nodePort": 31587},
        networkPolicy={"enabled": True},
        server={
            "service": {
                "ports": {"imap": None, "managesieve": None, "submission": 2587},
                "nodePorts": {"smtp": 30025},
            }
        },
    )
    manifests = render(values)
    ports = one(manifests, "Service", FULLNAME)["spec"]["ports"]
    assert [(p["name"], p["port"], p.get("nodePort")) for p in ports] == [
        ("smtp", 25, 30025),
        ("submission", 2587, None),
        ("submissions", 465, None),
        ("imaps", 993, None),
        ("http", 80, None),
        ("https", 443, None),
    ]
    assert {p["name"] for p in container(manifests)["ports"]} == set(SERVER_PORTS)
    (rule,) = one(manifests, "NetworkPolicy")["spec"]["ingress"]
    assert [p["port"] for p in rule["ports"]] == [
        "smtp",
        "submission",
        "submissions",
        "imaps",
        "http",
        "https",
    ]
    cluster_ip = render({**values, "service": {"type": "ClusterIP"}})
    assert "nodePort" not in str(one(cluster_ip, "Service", FULLNAME)["spec"]["ports"])


def test_server_state_is_a_persistent_volume_claim() -> None:
    """/var/lib/mailstack (datastore + mailboxes) is a claim template beside the queue; the
    DKIM keys and the self-signed certificate live on it too."""
    manifests = render(server())
    templates = claim_templates(manifests)
    assert set(templates) == {"queue", "state"}
    state = templates["state"]["spec"]
    assert state["resources"]["requests"]["storage"] == "10Gi"
    assert state["accessModes"] == ["ReadWriteOnce"]
    assert "storageClassName" not in state
    volumes = mounts(manifests)
    assert volumes["/var/lib/mailstack"] == {
        "name": "state",
        "mountPath": "/var/lib/mailstack",
        "subPath": "state",
    }
    assert (volumes["/etc/opendkim/keys"]["name"], volumes["/etc/opendkim/keys"]["subPath"]) == (
        "state",
        "dkim-keys",
    )
    assert (volumes["/etc/mailstack/tls"]["name"], volumes["/etc/mailstack/tls"]["subPath"]) == (
        "state",
        "tls",
    )
    assert volumes["/var/spool/postfix"]["name"] == "queue"
    assert "state" not in pod_volumes(manifests)

    sized = render(server(server={"persistence": {"size": "50Gi", "storageClass": "fast"}}))
    spec = claim_templates(sized)["state"]["spec"]
    assert (spec["resources"]["requests"]["storage"], spec["storageClassName"]) == ("50Gi", "fast")


def test_server_state_without_persistence_or_on_an_existing_claim() -> None:
    ephemeral = render(server(server={"persistence": {"enabled": False}}))
    assert set(claim_templates(ephemeral)) == {"queue"}
    assert pod_volumes(ephemeral)["state"] == {"name": "state", "emptyDir": {}}
    claimed = render(server(server={"persistence": {"existingClaim": "{{ .Release.Name }}-mail"}}))
    assert set(claim_templates(claimed)) == {"queue"}
    assert pod_volumes(claimed)["state"]["persistentVolumeClaim"] == {"claimName": "mail-mail"}
    assert mounts(claimed)["/var/lib/mailstack"]["name"] == "state"


def test_server_dkim_keys_follow_the_chosen_volume() -> None:
    """server.persistence.dkimKeys off: the relay's persistence.dkimKeys decides (queue)."""
    values = server(server={"persistence": {"dkimKeys": False}})
    assert "/etc/opendkim/keys" not in mounts(render(values))
    keys = mounts(render({**values, "persistence": {"dkimKeys": True}}))["/etc/opendkim/keys"]
    assert (keys["name"], keys["subPath"]) == ("queue", "dkim-keys")


def test_server_tls_secret_is_mounted_and_named_in_the_environment() -> None:
    manifests = render(server(server={"tls": {"secretName": "{{ .Release.Name }}-tls"}}))
    certs = mounts(manifests)[CERT_DIR]
    assert certs["readOnly"] is True
    secret = pod_volumes(manifests)[certs["name"]]["secret"]
    assert secret["secretName"] == "mail-tls"
    env = env_vars(manifests)
    # the keys of a kubernetes.io/tls Secret
    assert env["MAILSTACK_TLS_CERT_FILE"]["value"] == f"{CERT_DIR}/tls.crt"
    assert env["MAILSTACK_TLS_KEY_FILE"]["value"] == f"{CERT_DIR}/tls.key"
    assert "/etc/mailstack/tls" not in mounts(manifests)  # no self-signed certificate to keep
    # the relay's STARTTLS settings are not the server's business
    assert not any(k.startswith("POSTFIX_smtpd_tls") for k in one(manifests, "ConfigMap")["data"])


def test_server_without_tls_secret_sets_no_certificate_files() -> None:
    manifests = render(server())
    assert not {"MAILSTACK_TLS_CERT_FILE", "MAILSTACK_TLS_KEY_FILE"} & set(env_vars(manifests))
    assert CERT_DIR not in mounts(manifests)
    assert "certs" not in pod_volumes(manifests)


def test_server_database_url_comes_from_a_secret_key_ref() -> None:
    url = "postgresql://mail:pw@db/mail"
    manifests = render(
        server(server={"database": {"existingSecret": "{{ .Release.Name }}-db", "key": "url"}})
    )
    database = env_vars(manifests)["MAILSTACK_DATABASE_URL"]
    assert database == {
        "name": "MAILSTACK_DATABASE_URL",
        "valueFrom": {"secretKeyRef": {"name": "mail-db", "key": "url"}},
    }
    assert "MAILSTACK_DATABASE_URL" not in one(manifests, "ConfigMap")["data"]
    assert url not in yaml.safe_dump_all(manifests)
    default_key = env_vars(render(server(server={"database": {"existingSecret": "db"}})))
    assert default_key["MAILSTACK_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["key"] == (
        "database-url"
    )
    # no Secret: SQLite on the state volume, the image's default
    assert "MAILSTACK_DATABASE_URL" not in env_vars(render(server()))


def test_server_writable_paths_are_volumes_for_a_read_only_root() -> None:
    """With readOnlyRootFilesystem every path the server writes (the relay's, plus
    /etc/mailstack for the generated Dovecot configuration and /var/lib/mailstack) is an
    emptyDir or a claim, none a read-only mount."""
    manifests = render(server(**READ_ONLY_ROOT, server={"tls": {"secretName": "mx-tls"}}))
    assert container(manifests)["securityContext"] == {"readOnlyRootFilesystem": True}
    found = mounts(manifests)
    assert set(found) >= SERVER_WRITABLE_PATHS
    volumes, templates = pod_volumes(manifests), claim_templates(manifests)
    for path in SERVER_WRITABLE_PATHS:
        mount = found[path]
        assert not mount.get("readOnly"), path
        assert mount["name"] in templates or "emptyDir" in volumes[mount["name"]], path
    assert found["/etc/mailstack"]["name"] == "runtime"
    pod = one(manifests, "StatefulSet")["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["initContainers"]] == ["postfix-files"]


def test_server_network_policy_admits_the_mail_ports_from_anywhere() -> None:
    """An internet-facing server: by default the mail ports are open to any peer (no `from`),
    the relay's peer selectors do not narrow them, and metrics stay as they were."""
    monitoring = [{"namespaceSelector": {"matchLabels": {"team": "monitoring"}}}]
    manifests = render(
        server(
            metrics={"enabled": True},
            networkPolicy={
                "enabled": True,
                "podSelector": {"matchLabels": {"sends-mail": "true"}},
                "metricsFrom": monitoring,
            },
        )
    )
    policy = one(manifests, "NetworkPolicy", FULLNAME)["spec"]
    assert policy["policyTypes"] == ["Ingress"]
    mail, metrics = policy["ingress"]
    assert mail["ports"] == [{"port": name, "protocol": "TCP"} for name in SERVER_PORTS]
    assert "from" not in mail
    assert metrics == {"ports": [{"port": "metrics", "protocol": "TCP"}], "from": monitoring}

    peers = [{"ipBlock": {"cidr": "198.51.100.0/24"}}]
    narrowed = render(
        server(networkPolicy={"enabled": True}, server={"networkPolicy": {"from": peers}})
    )
    (rule,) = one(narrowed, "NetworkPolicy")["spec"]["ingress"]
    assert rule["from"] == peers


def test_server_probes_health_and_metrics() -> None:
    """The probes run `mailstack health`, which reads MAILSTACK_PROFILE from the container's
    environment; metrics work as in the relay."""
    manifests = render(server(metrics={"enabled": True, "port": 9100}))
    probes = container(manifests)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert probes[probe]["exec"]["command"] == ["mailstack", "health"], probe
    assert env_vars(manifests)["MAILSTACK_PROFILE"]["value"] == "server"
    assert one(manifests, "ConfigMap")["data"]["MAILSTACK_METRICS_LISTEN"] == "0.0.0.0:9100"
    assert {p["name"]: p["containerPort"] for p in container(manifests)["ports"]} == {
        **SERVER_PORTS,
        "metrics": 9100,
    }
    assert service_ports(one(manifests, "Service", f"{FULLNAME}-metrics")) == {
        "metrics": (9100, "metrics")
    }


def test_server_prestop_closes_postscreen_too() -> None:
    """The MX listener is postscreen, not smtpd: the preStop hook takes it out as well."""
    script = prestop_script(render(server()))
    assert '($8 == "smtpd" || $8 == "postscreen")' in script
    assert "postqueue -c /etc/postfix -f" in script
    check = subprocess.run(["sh", "-n", "-c", script], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stderr
    assert "postscreen" not in prestop_script(render({}))


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"replicaCount": 2}, "one replica"),
        ({"autoscaling": {"enabled": True}}, "one replica"),
        ({"certs": {"create": True}}, r"server\.tls\.secretName"),
        ({"certs": {"existingSecret": "relay-tls"}}, r"server\.tls\.secretName"),
        (
            {"server": {"service": {"ports": dict.fromkeys(SERVER_PORTS)}}},
            r"server\.service\.ports",
        ),
    ],
)
def test_server_refuses_what_it_cannot_run(values: dict[str, Any], message: str) -> None:
    """Mailboxes live on one replica's volume; the TLS certificate is server.tls.secretName;
    a Service needs a port."""
    with pytest.raises(helm.HelmRenderError, match=message):
        render(server(**values))


@pytest.mark.parametrize("service", [s for s, _ in EXPOSED.values()], ids=EXPOSED.keys())
def test_server_may_be_exposed_without_mynetworks(service: dict[str, Any]) -> None:
    """The server relays only for logged-in clients (its mynetworks is loopback, for
    postscreen): an internet-facing Service is what it is for."""
    manifests = render(server(service=service))
    assert service_ports(one(manifests, "Service", FULLNAME)) == {
        name: (port, name) for name, port in SERVER_PORTS.items()
    }
    assert "RFC 1918" not in notes(server(service=service))


def test_relay_output_is_unchanged_by_the_server_values() -> None:
    """profile: relay is the default, and nothing of `server` reaches the relay's manifests;
    none of the server's ports, volumes or environment appear."""
    relay = render({})
    assert render({"profile": "relay"}) == relay
    assert render({"server": server_kitchensink()["server"]}) == relay
    # the relay's kitchen sink sets server values; left out, nothing changes (certs.create
    # would make a new random certificate per rendering, an existing one does not)
    values = {**kitchensink(), "certs": {"existingSecret": "relay-tls"}}
    assert values["server"]
    without_server = {key: value for key, value in values.items() if key != "server"}
    assert render(values) == render(without_server)
    ports = container(relay)["ports"]
    assert ports == [{"name": "smtp", "containerPort": 587, "protocol": "TCP"}]
    assert "env" not in container(relay)
    assert set(claim_templates(relay)) == {"queue"}
    assert not {"/var/lib/mailstack", "/etc/mailstack", "/etc/mailstack/tls"} & set(mounts(relay))
    assert service_ports(one(relay, "Service", FULLNAME)) == {"smtp": (587, "smtp")}
    assert "postscreen" not in yaml.safe_dump_all(relay)


def test_server_kitchensink_uses_every_option() -> None:
    """values-server.yaml sets every top-level value and every server value."""
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    values = server_kitchensink()
    assert set(values) == set(defaults)

    def leaves(node: dict[str, Any], prefix: str = "") -> set[str]:
        found = set()
        for key, value in node.items():
            dotted = f"{prefix}{key}"
            if isinstance(value, dict) and value:
                found |= leaves(value, f"{dotted}.")
            else:
                found.add(dotted)
        return found

    given = leaves(values["server"])
    for leaf in leaves(defaults["server"]):
        assert any(g == leaf or g.startswith(f"{leaf}.") for g in given), f"server.{leaf}"
    manifests = render(values)
    # the relay's kitchen sink's kinds, but the HPA (one replica)
    relay_kinds = {m["kind"] for m in render(kitchensink())}
    assert {m["kind"] for m in manifests} == relay_kinds - {"HorizontalPodAutoscaler"}
    statefulset = one(manifests, "StatefulSet", "mail-server")
    assert statefulset["spec"]["replicas"] == 1
    state = claim_templates(manifests)["state"]["spec"]
    assert state["storageClassName"] == ""
    assert state["accessModes"] == ["ReadWriteOncePod"]
    assert "managesieve" not in service_ports(one(manifests, "Service", "mail-server"))


# -- The server's pod layout in the real image ----------------------------------------------

# The session fixture of the image tests: scripts/build-image.sh, cached layers.
image = test_image.image


@dataclass
class ChartPod:
    """The chart's server container run by podman as the StatefulSet would run it: its args,
    its environment (ConfigMap + env), a read-only root, every emptyDir a tmpfs (podman copies
    the image's files in, the init container's job) and every claim subPath a host folder.
    The listeners move to free loopback ports (host network); the chart's port numbers are
    the tests above."""

    manifests: list[Manifest]
    claims: Path
    image: str
    ports: dict[str, int] = field(default_factory=dict)
    names: list[str] = field(default_factory=list)

    def start(self) -> str:
        spec, volumes = container(self.manifests), pod_volumes(self.manifests)
        options = ["--read-only"]
        for mount in spec["volumeMounts"]:
            if mount["name"] in claim_templates(self.manifests):
                folder = self.claims / mount["name"] / mount.get("subPath", "")
                folder.mkdir(parents=True, exist_ok=True)
                options.append(f"--volume={folder}:{mount['mountPath']}")
            else:
                assert "emptyDir" in volumes[mount["name"]], mount
                options.append(f"--tmpfs={mount['mountPath']}")
        env = dict(one(self.manifests, "ConfigMap")["data"])
        env.update({e["name"]: e["value"] for e in spec.get("env", [])})
        self.ports = self.ports or {name: free_port() for name in SERVER_PORTS}
        for name, port in self.ports.items():
            env[f"MAILSTACK_LISTEN_{name.upper()}"] = f"127.0.0.1:{port}"
        name = f"mailstack-chart-{uuid.uuid4().hex[:8]}"
        self.names.append(name)
        environment = [f"--env={key}={value}" for key, value in env.items()]
        podman("run", "--detach", "--name", name, "--network=host", *options, *environment,
               self.image, *spec["args"], timeout=180)  # fmt: skip
        return name

    def exec(self, name: str, *command: str, stdin: str | None = None) -> str:
        result = subprocess.run(
            ["podman", "exec", "-i", name, *command],
            input=stdin,
            capture_output=True,
            text=True,
            env=test_image.podman_env(),
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, f"{command}: {result.stdout}{result.stderr}"
        return result.stdout

    def wait_healthy(self, name: str) -> None:
        """Until the chart's readiness probe command passes inside the container."""
        command = container(self.manifests)["readinessProbe"]["exec"]["command"]
        deadline = time.monotonic() + 90
        while podman("exec", name, *command, check=False).returncode != 0:
            logs = podman("logs", name, check=False)
            assert time.monotonic() < deadline, f"not healthy:\n{logs.stdout}{logs.stderr}"
            time.sleep(1)

    def remove(self) -> None:
        for name in self.names:
            podman("rm", "--force", "--time", "0", name, check=False)


def imap_subjects(port: int, user: str, password: str) -> list[bytes]:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the self-signed certificate made in the container
    client = imaplib.IMAP4("127.0.0.1", port, timeout=30)
    try:
        client.starttls(context)
        client.login(user, password)
        client.select("INBOX", readonly=True)
        _, data = client.search(None, "ALL")
        return [
            client.fetch(n, "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")[1][0][1]
            for n in data[0].split()
        ]
    finally:
        client.logout()


@pytest.mark.image
@pytest.mark.timeout(1800)
def test_server_runs_with_the_charts_read_only_layout(image: str, tmp_path: Path) -> None:
    """The rendered server pod (readOnlyRootFilesystem) in the real image: healthy by its
    probe, mail to the MX lands in a Maildir on the state claim, the preStop hook closes
    the MX and drains, stop is clean; a second pod on the same claims keeps the datastore,
    the mailbox and the self-signed certificate, and makes the new domain's DKIM key there."""
    values = server(**READ_ONLY_ROOT, config={"postfix": {"myhostname": "mx.example.com"}})
    pod = ChartPod(render(values), tmp_path / "claims", image)
    state = pod.claims / "state"
    try:
        first = pod.start()
        pod.wait_healthy(first)
        pod.exec(first, "mailstack", "domain", "add", "example.com")
        pod.exec(first, "mailstack", "user", "add", "alice@example.com", "--password-stdin",
                 stdin="chart password\n")  # fmt: skip
        with smtplib.SMTP("127.0.0.1", pod.ports["smtp"], timeout=30) as mx:
            mx.sendmail(
                "friend@remote.test",
                ["alice@example.com"],
                b"From: friend@remote.test\r\nSubject: on the claim\r\n\r\nhello\r\n",
            )
        maildir = state / "state" / "mail" / "example.com" / "alice" / "Maildir"
        deadline = time.monotonic() + 60
        while not list(maildir.glob("new/*")):
            assert time.monotonic() < deadline, "the message never reached the state claim"
            time.sleep(0.5)
        assert (state / "state" / "mailstack.db").is_file()
        certificate = (state / "tls" / "cert.pem").read_bytes()

        result = podman("exec", first, "/bin/sh", "-c", prestop_script(pod.manifests), timeout=150)
        assert result.returncode == 0, result.stderr
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", pod.ports["smtp"]), timeout=5).close()
        assert "preStop: queue empty" in podman("logs", first).stdout
        podman("stop", "--time", "30", first, timeout=90)
        exit_code = podman("inspect", "--format", "{{.State.ExitCode}}", first).stdout.strip()
        assert exit_code == "0"

        second = pod.start()
        pod.wait_healthy(second)
        assert (state / "dkim-keys" / "example.com.private").is_file()
        assert (state / "tls" / "cert.pem").read_bytes() == certificate
        subjects = imap_subjects(pod.ports["imap"], "alice@example.com", "chart password")
        assert [s.strip() for s in subjects] == [b"Subject: on the claim"]
    finally:
        pod.remove()


def test_server_dkim_rotate_selector_sets_the_environment() -> None:
    """server.dkim.rotateSelector becomes MAILSTACK_DKIM_ROTATE_SELECTOR; a pattern with a
    character no selector may hold is refused by the schema."""
    found = env_vars(render(server(server={"dkim": {"rotateSelector": "k%Y%m"}})))
    assert found["MAILSTACK_DKIM_ROTATE_SELECTOR"]["value"] == "k%Y%m"
    assert "MAILSTACK_DKIM_ROTATE_SELECTOR" not in env_vars(render(server()))
    with pytest.raises(Exception, match="rotateSelector"):
        render(server(server={"dkim": {"rotateSelector": "k %Y"}}))


def test_server_acme_values_set_the_environment() -> None:
    """server.acme, server.tls.names and server.mtaSts become the worker's settings; ACME and a
    certificate Secret together are refused."""
    values = server(
        server={
            "acme": {"email": "postmaster@example.com", "directory": "https://ca.test/dir"},
            "tls": {"names": ["mta-sts.example.com", "autoconfig.example.com"]},
            "mtaSts": {"mode": "enforce"},
        }
    )
    found = env_vars(render(values))
    assert found["MAILSTACK_ACME_EMAIL"]["value"] == "postmaster@example.com"
    assert found["MAILSTACK_ACME_DIRECTORY"]["value"] == "https://ca.test/dir"
    assert found["MAILSTACK_TLS_NAMES"]["value"] == "mta-sts.example.com,autoconfig.example.com"
    assert found["MAILSTACK_MTA_STS_MODE"]["value"] == "enforce"
    assert "MAILSTACK_ACME_EMAIL" not in env_vars(render(server()))
    both = server(server={"acme": {"email": "a@example.com"}, "tls": {"secretName": "cert"}})
    with pytest.raises(Exception, match="choose one source of the certificate"):
        render(both)


def test_server_acme_dns01_values_take_the_tsig_secret_from_a_secret() -> None:
    """server.acme.dns becomes the DNS-01 settings; the TSIG secret comes from a Secret,
    never as a value; dns-01 without a server, or half a TSIG key, is refused."""
    dns = {
        "server": "ns1.example.com:53",
        "zone": "example.com",
        "tsigKeyName": "acme-update",
        "tsigAlgorithm": "hmac-sha512",
        "tsigSecret": {"existingSecret": "acme-tsig", "key": "secret"},
    }
    acme = {"email": "postmaster@example.com", "challenge": "dns-01", "dns": dns}
    found = env_vars(render(server(server={"acme": acme, "tls": {"names": ["*.example.com"]}})))
    assert found["MAILSTACK_ACME_CHALLENGE"]["value"] == "dns-01"
    assert found["MAILSTACK_ACME_DNS_SERVER"]["value"] == "ns1.example.com:53"
    assert found["MAILSTACK_ACME_DNS_ZONE"]["value"] == "example.com"
    assert found["MAILSTACK_ACME_DNS_TSIG_KEY_NAME"]["value"] == "acme-update"
    assert found["MAILSTACK_ACME_DNS_TSIG_ALGORITHM"]["value"] == "hmac-sha512"
    secret = found["MAILSTACK_ACME_DNS_TSIG_SECRET"]
    assert "value" not in secret
    assert secret["valueFrom"]["secretKeyRef"] == {"name": "acme-tsig", "key": "secret"}
    assert found["MAILSTACK_TLS_NAMES"]["value"] == "*.example.com"
    assert "MAILSTACK_ACME_CHALLENGE" not in env_vars(render(server()))
    no_server = {**acme, "dns": {**dns, "server": ""}}
    with pytest.raises(Exception, match=r"dns-01 needs server\.acme\.dns\.server"):
        render(server(server={"acme": no_server}))
    half = {**acme, "dns": {**dns, "tsigSecret": {"existingSecret": ""}}}
    with pytest.raises(Exception, match="set both, or neither"):
        render(server(server={"acme": half}))
