"""The deployment validation's model of k8s (ops/deploycheck): what it reads from
rendered objects, and how it decides that a network policy lets traffic through.

The checks themselves run against the real manifests in `make validate-deploy`.
"""

import json
from fractions import Fraction

import pytest
import yaml

from ops.deploycheck import broker, datastores, metrics
from ops.deploycheck.capacity import (
    one_autoscaler_per_deployment,
    pod_resources,
    quantity,
    queue_problems,
    quota_admits_full_scale,
)
from ops.deploycheck.consistency import k8s_secrets_mounted
from ops.deploycheck.customresources import built_in_objects, custom_resources_valid
from ops.deploycheck.platforms import load_k8s, load_swarm, selected
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


# -- the ha overlay: custom resources, autoscalers, quota -------------------------


def scaled_object(target: str, triggers: list[dict], name=None) -> dict:
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": name or target},
        "spec": {
            "scaleTargetRef": {"name": target},
            "minReplicaCount": 3,
            "maxReplicaCount": 5,
            "triggers": triggers,
        },
    }


def rabbitmq_trigger(pattern: str) -> dict:
    return {
        "type": "rabbitmq",
        "metadata": {
            "protocol": "http",
            "mode": "QueueLength",
            "value": "20",
            "useRegex": "true",
            "queueName": pattern,
        },
        "authenticationRef": {"name": "rabbitmq-management"},
    }


def test_a_custom_resource_with_an_unknown_field_or_a_broken_cel_rule_fails():
    broken = scaled_object(
        "accounts", [{"type": "cpu", "metricType": "Utilization", "metadata": {"value": "70"}}]
    )
    broken["spec"]["minReplicaCount"] = 9  # over maxReplicaCount: a CEL rule of the CRD
    broken["spec"]["replica"] = 1  # no such field
    with pytest.raises(Failed) as failure:
        custom_resources_valid(load_k8s(rendered(broken)))
    assert "minReplicaCount must be less than or equal to maxReplicaCount" in str(failure.value)
    assert "'replica' was unexpected" in str(failure.value)


def test_a_valid_custom_resource_passes_and_is_left_out_of_the_built_in_objects():
    valid = scaled_object("accounts", [rabbitmq_trigger("^rpc-accounts$")])
    platform = load_k8s(rendered(valid, PAYMENTS_POD))
    custom_resources_valid(platform)
    assert [o["kind"] for o in yaml.safe_load_all(built_in_objects(platform))] == ["Deployment"]


def test_two_autoscalers_on_one_deployment_or_a_replicas_field_under_one_fail():
    hpa = {
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "payments"},
        "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "payments"}, "maxReplicas": 4},
    }
    with_replicas = {**PAYMENTS_POD, "spec": {**PAYMENTS_POD["spec"], "replicas": 3}}
    keda = scaled_object("payments", [])
    with pytest.raises(Failed) as failure:
        one_autoscaler_per_deployment(load_k8s(rendered(with_replicas, hpa, keda)))
    assert "2 autoscalers" in str(failure.value)
    assert "sets replicas" in str(failure.value)
    one_autoscaler_per_deployment(load_k8s(rendered(PAYMENTS_POD, hpa)))


QUORUM = {"SAGA_QUEUE_TYPE": "quorum"}
CLASSIC = {"SAGA_QUEUE_TYPE": "classic"}


def test_a_queue_pattern_must_match_every_queue_the_service_consumes_and_no_retry_queue():
    quorum_pattern = r"^(rpc-accounts|saga\.accounts\.[a-z0-9_]+)$"
    assert queue_problems("accounts", rabbitmq_trigger(quorum_pattern), QUORUM) == []
    missing = queue_problems("accounts", rabbitmq_trigger("^rpc-accounts$"), QUORUM)
    assert "accounts: queue saga.accounts.handle_transfer_approved does not match" in "\n".join(
        missing
    )
    greedy = queue_problems("accounts", rabbitmq_trigger("accounts"), QUORUM)
    assert any(".retry-1000ms" in p for p in greedy)
    assert any("saga.accounts.dead-letters" in p for p in greedy)


def test_the_queue_names_follow_the_rendered_queue_type():
    # Classic queues keep nameko's names: the quorum pattern misses them.
    problems = queue_problems(
        "accounts", rabbitmq_trigger(r"^(rpc-accounts|saga\.accounts\.[a-z0-9_]+)$"), CLASSIC
    )
    assert any(
        "evt-risk-transfer_approved--accounts.handle_transfer_approved" in p for p in problems
    )


def test_quantities_and_a_pods_largest_of_init_and_running_containers():
    assert quantity("250m") == Fraction(1, 4)
    assert quantity("2Gi") == 2 * 2**30
    pod = {
        "initContainers": [{"resources": {"requests": {"cpu": "1", "memory": "32Mi"}}}],
        "containers": [
            {"resources": {"requests": {"cpu": "100m", "memory": "192Mi"}}},
            {"resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}},
        ],
    }
    assert pod_resources(pod, "requests") == {"cpu": 1, "memory": 256 * 2**20}


def test_a_quota_under_the_full_scale_of_the_workloads_fails():
    pod = deployment(
        "payments",
        {
            "name": "payments",
            "resources": {
                "requests": {"cpu": "1", "memory": "1Gi"},
                "limits": {"cpu": "1", "memory": "1Gi"},
            },
        },
    )
    quota = {
        "kind": "ResourceQuota",
        "metadata": {"name": "fintech"},
        "spec": {
            "hard": {
                "pods": "6",
                "requests.cpu": "5",
                "requests.memory": "6Gi",
                "limits.cpu": "6",
                "limits.memory": "6Gi",
                "requests.storage": "0",
            }
        },
    }
    limits = {
        "kind": "LimitRange",
        "metadata": {"name": "fintech"},
        "spec": {"limits": [{"type": "Container", "max": {"cpu": "2", "memory": "2Gi"}}]},
    }
    keda = scaled_object("payments", [])  # up to 5 pods, plus one surge pod: 6
    with pytest.raises(Failed) as failure:
        quota_admits_full_scale(load_k8s(rendered(pod, quota, limits, keda)))
    assert str(failure.value) == "ResourceQuota fintech: requests.cpu 5 < 6 at full scale"


# The data stores (ops/deploycheck/datastores.py): each service its own
# PostgreSQL role and password secret, TLS verified; Redis private.
DATABASE_URL = (
    "postgresql://fintech_{service}:{password}@postgres:5432/fintech_{service}"
    "?sslmode=verify-full&sslrootcert=/run/secrets/f/ca.crt"
)


def database_client(name: str, args: list[str], env: dict, secrets: dict[str, tuple]) -> dict:
    """A Deployment whose container mounts each secret item (path -> (secret, key))."""
    sources = [
        {"secret": {"name": secret, "items": [{"key": key, "path": path}]}}
        for path, (secret, key) in secrets.items()
    ]
    return deployment(
        name,
        {
            "name": name,
            "args": args,
            "env": [{"name": k, "value": v} for k, v in env.items()],
            "volumeMounts": [{"name": "secrets", "mountPath": "/run/secrets/f"}],
        },
        [{"name": "secrets", "projected": {"sources": sources}}],
        {"app.kubernetes.io/name": name, "app.kubernetes.io/component": "service"},
    )


def database_platform(auth_secret="fintech-postgres-auth", auth_url=DATABASE_URL):
    ca = {"ca.crt": ("postgres-tls", "ca.crt")}
    superuser = database_client(
        "postgres",
        ["postgres"],
        {"POSTGRES_USER": "fintech", "POSTGRES_PASSWORD_FILE": "/run/secrets/f/admin"},
        {"admin": ("fintech-secrets", "postgres-password")},
    )
    services = [
        database_client(
            service,
            ["service", service],
            {"DATABASE_URL": url, "DATABASE_PASSWORD_FILE": "/run/secrets/f/pw"},
            {"pw": (secret, "password"), **ca},
        )
        for service, secret, url in (
            ("auth", auth_secret, auth_url),
            ("accounts", "fintech-postgres-accounts", DATABASE_URL),
        )
    ]
    migrate = database_client(
        "migrate",
        ["migrate"],
        {
            "DATABASE_URL": DATABASE_URL,
            "AUTH_DATABASE_PASSWORD_FILE": "/run/secrets/f/auth",
            "ACCOUNTS_DATABASE_PASSWORD_FILE": "/run/secrets/f/accounts",
        },
        {
            "auth": ("fintech-postgres-auth", "password"),
            "accounts": ("fintech-postgres-accounts", "password"),
            **ca,
        },
    )
    return load_k8s(rendered(superuser, *services, migrate))


@pytest.fixture
def two_services(monkeypatch):
    monkeypatch.setattr(datastores, "migrated_services", lambda: ["accounts", "auth"])


def test_each_service_with_its_own_role_secret_and_verified_tls_passes(two_services):
    datastores.database_roles_separate(database_platform())


def test_a_shared_password_secret_or_an_unverified_or_superuser_url_fails(two_services):
    with pytest.raises(Failed) as shared:
        datastores.database_roles_separate(database_platform("fintech-postgres-accounts"))
    assert "share the database password secret" in str(shared.value)
    with pytest.raises(Failed) as superuser:
        datastores.database_roles_separate(
            database_platform(
                auth_url="postgresql://fintech:{password}@postgres/fintech_auth?sslmode=require"
            )
        )
    message = str(superuser.value)
    assert "auth: connects as fintech, not as its own role fintech_auth" in message
    assert "auth: sslmode is require, not verify-full" in message
    assert "auth: sslrootcert None is not a mounted file" in message


def redis_platform(gateway_env: dict, service_type: str = "ClusterIP"):
    gateway_labels = {"app.kubernetes.io/name": "gateway", "app.kubernetes.io/component": "gateway"}
    redis_labels = {"app.kubernetes.io/name": "redis", "app.kubernetes.io/component": "store"}
    gateway = database_client(
        "gateway", ["gateway"], gateway_env, {"uri": ("fintech-redis", "uri")}
    )
    gateway["spec"]["template"]["metadata"]["labels"] = gateway_labels
    redis = database_client(
        "redis",
        ["sh", "-c", "requirepass ..."],
        {},
        {"password": ("fintech-redis", "password")},
    )
    redis["spec"]["template"]["metadata"]["labels"] = redis_labels
    service = {"kind": "Service", "metadata": {"name": "redis"}, "spec": {"type": service_type}}
    only_gateway = {
        "kind": "NetworkPolicy",
        "metadata": {"name": "redis"},
        "spec": {
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "redis"}},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [{"podSelector": {"matchLabels": gateway_labels}}],
                    "ports": [{"port": 6379}],
                }
            ],
        },
    }
    to_redis = egress_policy(
        {"matchLabels": gateway_labels},
        {"to": [{"podSelector": {"matchLabels": redis_labels}}], "ports": [{"port": 6379}]},
    )
    return load_k8s(rendered(gateway, redis, service, only_gateway, to_redis))


def test_rate_limits_in_a_private_redis_by_a_secret_uri_pass():
    datastores.rate_limits_shared(
        redis_platform({"RATE_LIMIT_STORAGE_URI_FILE": "/run/secrets/f/uri"})
    )


def test_a_plain_storage_uri_or_an_exposed_redis_fails():
    with pytest.raises(Failed) as failure:
        datastores.rate_limits_shared(
            redis_platform(
                {
                    "RATE_LIMIT_STORAGE_URI": "redis://redis:6379",
                    "RATE_LIMIT_STORAGE_URI_FILE": "/run/secrets/f/uri",
                },
                service_type="LoadBalancer",
            )
        )
    assert "RATE_LIMIT_STORAGE_URI is set plainly" in str(failure.value)
    assert "Service/redis: type LoadBalancer, not ClusterIP" in str(failure.value)


# The broker (ops/deploycheck/broker.py): TLS only, EXTERNAL, the definitions
# of shared.access; every client its own identity's certificate.
BROKER_CONF = """listeners.tcp = none
listeners.ssl.default = 5671
ssl_options.cacertfile = /etc/rabbitmq/tls/ca.crt
ssl_options.certfile = /etc/rabbitmq/tls/tls.crt
ssl_options.keyfile = /etc/rabbitmq/tls/tls.key
ssl_options.verify = verify_peer
ssl_options.fail_if_no_peer_cert = true
auth_mechanisms.1 = EXTERNAL
ssl_cert_login_from = common_name
load_definitions = /etc/rabbitmq/definitions
"""


def client_certificate(identity: str) -> dict:
    return {
        "kind": "Certificate",
        "metadata": {"name": f"amqp-{identity}"},
        "spec": {
            "secretName": f"fintech-amqp-{identity}",
            "commonName": identity,
            "usages": ["client auth"],
        },
    }


def amqp_client(name: str, args: list[str], secret: str, uri: str) -> dict:
    items = [{"key": k, "path": k} for k in ("tls.crt", "tls.key", "ca.crt")]
    client = deployment(
        name,
        {
            "name": name,
            "args": args,
            "env": [
                {"name": "AMQP_URI", "value": uri},
                {"name": "AMQP_CA_FILE", "value": "/run/secrets/amqp/ca.crt"},
                {"name": "AMQP_CERT_FILE", "value": "/run/secrets/amqp/tls.crt"},
                {"name": "AMQP_KEY_FILE", "value": "/run/secrets/amqp/tls.key"},
            ],
            "volumeMounts": [{"name": "amqp", "mountPath": "/run/secrets/amqp"}],
        },
        [
            {
                "name": "amqp",
                "projected": {"sources": [{"secret": {"name": secret, "items": items}}]},
            }
        ],
    )
    return client


def broker_platform(
    conf=BROKER_CONF, definitions=None, gateway_secret="fintech-amqp-gateway", uri=None
):
    from shared.access import definitions as access_definitions

    uri = uri or "amqps://rabbitmq:5671/fintech"
    config = {
        "kind": "ConfigMap",
        "metadata": {"name": "rabbitmq-config"},
        "data": {
            "20-fintech.conf": conf,
            "enabled_plugins": "[rabbitmq_management,rabbitmq_auth_mechanism_ssl].",
            "definitions.json": json.dumps(definitions or access_definitions("fintech")),
        },
    }
    tls_items = [{"key": k, "path": k} for k in ("tls.crt", "tls.key", "ca.crt")]
    mounts = [
        {"name": "config", "mountPath": f"/etc/rabbitmq/{path}", "subPath": key}
        for path, key in (
            ("conf.d/20-fintech.conf", "20-fintech.conf"),
            ("enabled_plugins", "enabled_plugins"),
            ("definitions/10-access.json", "definitions.json"),
        )
    ] + [{"name": "tls", "mountPath": "/etc/rabbitmq/tls"}]
    broker = deployment(
        "rabbitmq",
        {"name": "rabbitmq", "args": [], "volumeMounts": mounts},
        [
            {"name": "config", "configMap": {"name": "rabbitmq-config"}},
            {"name": "tls", "secret": {"secretName": "rabbitmq-tls", "items": tls_items}},
        ],
        BROKER,
    )
    broker["kind"] = "StatefulSet"
    clients = [
        amqp_client("auth", ["service", "auth"], "fintech-amqp-auth", uri),
        amqp_client("gateway", ["gateway"], gateway_secret, uri),
        amqp_client("migrate", ["migrate"], "fintech-amqp-operator", uri),
    ]
    certificates = [client_certificate(i) for i in ("auth", "gateway", "operator")]
    return load_k8s(rendered(config, broker, *clients, *certificates))


def test_a_tls_only_broker_with_the_access_definitions_and_own_certificates_passes():
    broker.broker_mutual_tls(broker_platform())


def test_a_plaintext_or_password_broker_or_stale_definitions_fail():
    plaintext = BROKER_CONF.replace("listeners.tcp = none", "listeners.tcp.default = 5672")
    plaintext = plaintext.replace("auth_mechanisms.1 = EXTERNAL", "auth_mechanisms.1 = PLAIN")
    with pytest.raises(Failed) as failure:
        broker.broker_mutual_tls(broker_platform(conf=plaintext, definitions={"users": []}))
    message = str(failure.value)
    assert "listeners.tcp is None, not none" in message
    assert "auth_mechanisms.1 is PLAIN, not EXTERNAL" in message
    assert "equals shared.access.definitions('fintech')" in message


def test_a_password_uri_or_another_identitys_certificate_fails():
    with pytest.raises(Failed) as failure:
        broker.broker_mutual_tls(
            broker_platform(
                gateway_secret="fintech-amqp-auth",
                uri="amqp://fintech:{password}@rabbitmq:5672/fintech",
            )
        )
    message = str(failure.value)
    assert "auth: AMQP_URI is amqp://, not amqps://" in message
    assert "auth: AMQP_URI carries a user or password" in message
    assert "gateway: AMQP_CERT_FILE is fintech-amqp-auth, issued to auth, not gateway" in message
    assert "processes auth, gateway share the broker certificate fintech-amqp-auth" in message


# The gateway's /metrics token (ops/deploycheck/metrics.py): a mounted secret
# in the gateway, sent by every Prometheus job that scrapes the gateway.
METRICS_SECRET = ("fintech-metrics-token", "token")


def scrape_config(gateway_authorization: dict | None) -> dict:
    gateway = {
        "job_name": "gateway",
        "dns_sd_configs": [{"names": ["gateway-metrics.fintech.svc"], "type": "A", "port": 8000}],
    }
    if gateway_authorization is not None:
        gateway["authorization"] = gateway_authorization
    auth = {"job_name": "auth", "static_configs": [{"targets": ["auth-metrics:9100"]}]}
    return {"scrape_configs": [gateway, auth]}


SENDS_TOKEN = {"type": "Bearer", "credentials_file": "/run/secrets/f/token"}


def metrics_platforms(gateway_env=None, prometheus_secret=METRICS_SECRET):
    """The fintech namespace's gateway and the monitoring namespace's Prometheus."""
    env = {"METRICS_TOKEN_FILE": "/run/secrets/f/metrics-token"} if gateway_env is None else {}
    gateway = database_client(
        "gateway", ["gateway"], {**env, **(gateway_env or {})}, {"metrics-token": METRICS_SECRET}
    )
    prometheus = database_client(
        "prometheus",
        ["--config.file=/etc/prometheus/prometheus.yml"],
        {},
        {"token": prometheus_secret},
    )
    return load_k8s(rendered(gateway)), load_k8s(rendered(prometheus))


def test_a_gateway_token_secret_that_prometheus_sends_passes():
    fintech, monitoring = metrics_platforms()
    metrics.gateway_metrics_authenticated(fintech, monitoring, scrape_config(SENDS_TOKEN))


def test_a_gateway_without_its_token_file_fails():
    fintech, monitoring = metrics_platforms(gateway_env={"METRICS_TOKEN": "plain"})
    with pytest.raises(Failed) as failure:
        metrics.gateway_metrics_authenticated(fintech, monitoring, scrape_config(SENDS_TOKEN))
    message = str(failure.value)
    assert "gateway: METRICS_TOKEN is set plainly" in message
    assert "gateway: METRICS_TOKEN_FILE is not a mounted secret" in message


def test_a_gateway_scrape_job_without_the_token_fails():
    fintech, monitoring = metrics_platforms()
    with pytest.raises(Failed, match="job gateway: sends no credentials"):
        metrics.gateway_metrics_authenticated(fintech, monitoring, scrape_config(None))

    # Another job aimed at the gateway, under any name, must send it too.
    config = scrape_config(SENDS_TOKEN)
    config["scrape_configs"].append(
        {"job_name": "api", "static_configs": [{"targets": ["gateway:8000"]}]}
    )
    with pytest.raises(Failed, match="job api: sends no credentials"):
        metrics.gateway_metrics_authenticated(fintech, monitoring, config)


def test_an_inline_token_or_another_secret_than_the_gateways_fails():
    fintech, monitoring = metrics_platforms(prometheus_secret=("grafana-admin", "password"))
    with pytest.raises(Failed) as failure:
        metrics.gateway_metrics_authenticated(
            fintech, monitoring, scrape_config({**SENDS_TOKEN, "credentials": "t0ken"})
        )
    message = str(failure.value)
    assert "job gateway: the token is inline" in message
    assert "prometheus sends ('grafana-admin', 'password') at /run/secrets/f/token" in message


def swarm_stack_model(gateway_secrets: list[dict], prometheus_secrets: list[dict]):
    """What `docker-compose config --format json` says of the two services."""
    gateway = {
        "command": ["gateway"],
        "environment": {"METRICS_TOKEN_FILE": "/run/secrets/metrics_token"},
        "secrets": gateway_secrets,
    }
    return load_swarm(
        json.dumps(
            {"services": {"gateway": gateway, "prometheus": {"secrets": prometheus_secrets}}}
        )
    )


def test_swarm_the_gateway_and_prometheus_mount_the_same_token_secret():
    mounted = [{"source": "metrics_token", "target": "metrics_token"}]
    config = {
        "scrape_configs": [
            {
                "job_name": "gateway",
                "dns_sd_configs": [{"names": ["tasks.gateway"], "type": "A", "port": 8000}],
                "authorization": {"credentials_file": "/run/secrets/metrics_token"},
            }
        ]
    }
    metrics.gateway_metrics_authenticated(swarm_stack_model(mounted, mounted), None, config)
    with pytest.raises(Failed, match="prometheus mounts no secret at /run/secrets/metrics_token"):
        metrics.gateway_metrics_authenticated(swarm_stack_model(mounted, []), None, config)
    with pytest.raises(Failed, match="METRICS_TOKEN_FILE is not a mounted secret"):
        metrics.gateway_metrics_authenticated(swarm_stack_model([], mounted), None, config)
