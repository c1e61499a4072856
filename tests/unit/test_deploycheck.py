"""The deployment validation's model of k8s (ops/deploycheck): what it reads from
rendered objects, and how it decides that a network policy lets traffic through.

The checks themselves run against the real manifests in `make validate-deploy`.
"""

import pytest
import yaml

from ops.deploycheck.consistency import k8s_secrets_mounted
from ops.deploycheck.platforms import load_k8s, selected
from ops.deploycheck.runner import Failed
from ops.deploycheck.tools import final_user, production_stages

PAYMENTS = {"app.kubernetes.io/name": "payments", "app.kubernetes.io/component": "service"}
BROKER = {"app.kubernetes.io/component": "broker"}


def rendered(*objects: dict) -> str:
    return yaml.safe_dump_all(objects)


def deployment(name: str, container: dict, volumes=(), labels=None) -> dict:
    return {
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "template": {
                "metadata": {"labels": labels or {}},
                "spec": {"containers": [container], "volumes": list(volumes)},
            }
        },
    }


def egress_policy(pods: dict, rule: dict) -> dict:
    return {
        "kind": "NetworkPolicy",
        "metadata": {"name": "egress"},
        "spec": {"podSelector": pods, "policyTypes": ["Egress"], "egress": [rule]},
    }


PAYMENTS_POD = deployment(
    "payments",
    {
        "name": "payments",
        "args": ["service", "payments"],
        "envFrom": [{"configMapRef": {"name": "settings"}}],
        "env": [{"name": "PAYMENTS_PROVIDER_API_KEY_FILE", "value": "/run/secrets/p/api-key"}],
        "volumeMounts": [
            {"name": "secrets", "mountPath": "/run/secrets/p"},
            {"name": "tmp", "mountPath": "/app/var"},
        ],
        "livenessProbe": {"exec": {"command": ["entrypoint.sh", "healthcheck", "payments"]}},
    },
    volumes=[
        {
            "name": "secrets",
            "projected": {
                "sources": [
                    {"secret": {"name": "provider", "items": [{"key": "k", "path": "api-key"}]}}
                ]
            },
        },
        {"name": "tmp", "emptyDir": {}},
    ],
    labels=PAYMENTS,
)
SETTINGS = {"kind": "ConfigMap", "metadata": {"name": "settings"}, "data": {"LOG": "info"}}


def test_a_container_is_read_with_its_environment_secrets_probes_and_volumes():
    payments = load_k8s(rendered(SETTINGS, PAYMENTS_POD)).processes["payments"]

    assert payments.command == ["service", "payments"]
    assert payments.env == {
        "LOG": "info",
        "PAYMENTS_PROVIDER_API_KEY_FILE": "/run/secrets/p/api-key",
    }
    assert payments.secret("PAYMENTS_PROVIDER_API_KEY_FILE") == ("provider", "k")
    assert payments.probes == [["entrypoint.sh", "healthcheck", "payments"]]
    assert payments.can_write("/app/var/mail") and not payments.can_write("/app/variable")


def test_a_file_variable_without_its_secret_mounted_fails_the_check():
    unmounted = yaml.safe_load(yaml.safe_dump(PAYMENTS_POD))
    unmounted["spec"]["template"]["spec"]["containers"][0]["volumeMounts"] = []

    k8s_secrets_mounted(load_k8s(rendered(SETTINGS, PAYMENTS_POD)))
    with pytest.raises(Failed, match="PAYMENTS_PROVIDER_API_KEY_FILE=/run/secrets/p/api-key"):
        k8s_secrets_mounted(load_k8s(rendered(SETTINGS, unmounted)))
    with pytest.raises(Failed, match="envFrom unknown ConfigMap settings"):
        k8s_secrets_mounted(load_k8s(rendered(PAYMENTS_POD)))


def test_a_selector_matches_labels_and_in_and_exists_expressions():
    assert selected({"matchLabels": {"app.kubernetes.io/name": "payments"}}, PAYMENTS)
    assert not selected({"matchLabels": {"app.kubernetes.io/name": "risk"}}, PAYMENTS)
    in_services = {"key": "app.kubernetes.io/component", "operator": "In", "values": ["service"]}
    assert selected({"matchExpressions": [in_services]}, PAYMENTS)
    assert not selected({"matchExpressions": [{"key": "tier", "operator": "Exists"}]}, PAYMENTS)


def test_a_policy_lets_traffic_through_only_to_its_peers_on_its_ports():
    to_broker = {"to": [{"podSelector": {"matchLabels": BROKER}}], "ports": [{"port": 5672}]}
    k8s = load_k8s(rendered(PAYMENTS_POD, egress_policy({"matchLabels": PAYMENTS}, to_broker)))

    assert k8s.allows("Egress", PAYMENTS, BROKER, 5672)
    assert not k8s.allows("Egress", PAYMENTS, BROKER, 5432)
    assert not k8s.allows("Egress", PAYMENTS, {"app.kubernetes.io/component": "database"}, 5672)
    assert not k8s.allows("Ingress", PAYMENTS, BROKER, 5672)
    assert not k8s.allows("Egress", PAYMENTS, None, 5672, ip_peer=True)


def test_an_ip_block_admits_external_peers_and_a_peerless_rule_admits_all():
    to_anywhere = {"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"port": 443}]}
    k8s = load_k8s(rendered(egress_policy({}, to_anywhere)))
    assert k8s.allows("Egress", PAYMENTS, None, 443, ip_peer=True)
    assert not k8s.allows("Egress", PAYMENTS, BROKER, 443)

    open_rule = load_k8s(rendered(egress_policy({}, {"ports": [{"port": 53}]})))
    assert open_rule.allows("Egress", PAYMENTS, BROKER, 53)


def test_the_image_user_is_the_last_user_instruction():
    assert final_user("FROM a AS build\nUSER root\nFROM b\nuser 10001:10001\n") == "10001:10001"
    assert final_user("FROM a\nRUN useradd app\n") == ""


def test_the_production_stages_are_the_last_target_and_what_it_is_built_from():
    dockerfile = (
        "FROM python AS builder\nRUN pip wheel\n"
        "FROM python AS platform\nUSER 10001\nCOPY app/ app/\n"
        "FROM platform AS sandbox\nUSER 0\nCOPY sandboxes/ sandboxes/\n"
        "FROM platform AS runtime\n"
    )
    assert production_stages(dockerfile) == [["USER 10001", "COPY app/ app/"], []]
    assert final_user(dockerfile) == "10001"
