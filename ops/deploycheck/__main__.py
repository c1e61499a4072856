"""Run every check, in order; exit 1 if any failed. See __init__.py."""

import os
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

from .broker import broker_mutual_tls
from .capacity import (
    one_autoscaler_per_deployment,
    quota_admits_full_scale,
    services_scaled_on_their_queues,
)
from .consistency import (
    databases_one_per_migrated_service,
    k8s_secrets_mounted,
    notification_providers_wired,
    payment_provider_wired,
    services_deployed_probed_budgeted,
    swarm_secrets_mounted,
)
from .customresources import custom_resources_valid
from .datastores import database_roles_separate, gateway_ingress_tls, rate_limits_shared
from .entrypoint import (
    entrypoint_dispatches_with_secrets,
    notifications_sandbox_mails_and_takes_keys_from_files,
    payments_sandbox_takes_key_from_file,
)
from .metrics import gateway_metrics_authenticated
from .runner import Report
from .tools import (
    HA_KUBERNETES_VERSION,
    KUBERNETES_VERSION,
    TOOLS,
    docker_stack_accepts,
    hadolint_passes,
    image_has_no_sandbox,
    image_runs_as_non_root,
    init_script_copies_identical,
    install_tools,
    k8s_monitoring,
    k8s_monitors_everything,
    k8s_overlay,
    k8s_schemas_valid,
    monitoring_configs_valid,
    shell_scripts,
    shellcheck_passes,
    swarm_monitors_everything,
    swarm_stack,
)

ROOT = Path(__file__).resolve().parents[2]

# Each platform is held to the same four topics (consistency.py).
TOPICS = [
    ("services consistent (deployed, probed, budgeted)", services_deployed_probed_budgeted),
    ("databases consistent (one per service with migrations)", databases_one_per_migrated_service),
    ("provider consistent (payments, gateway, sandbox, policies)", payment_provider_wired),
    (
        "notifier consistent (notifications, its sandbox, secrets, policies)",
        notification_providers_wired,
    ),
    (
        "database roles (each service its own role and secret, verify-full, no superuser)",
        database_roles_separate,
    ),
    (
        "broker mutual TLS (TLS only, EXTERNAL, one certificate per identity, "
        "definitions = shared.access)",
        broker_mutual_tls,
    ),
]
# Production only (swarm, k8s prod and ha): the development overlay keeps the
# gateway's per-process limits and reaches it without an Ingress.
RATE_LIMITS = (
    "rate limits shared (gateway's Redis URI from a secret, Redis private)",
    rate_limits_shared,
)
INGRESS = ("ingress (TLS, ingress-nginx, proxy trusted, policy admits it)", gateway_ingress_tls)
# Every platform runs ENVIRONMENT=production, where the gateway does not
# start without its metrics token.
METRICS = "gateway /metrics behind a token (a mounted secret; every gateway scrape job sends it)"


def topics(platform: str) -> list[tuple[str, Callable]]:
    """The topics' checks, named for this platform."""
    return [(f"{platform}: {name}", check) for name, check in TOPICS]


def main() -> int:
    os.chdir(ROOT)
    if sys.prefix == sys.base_prefix:
        print("run it with the project's virtualenv: make validate-deploy", file=sys.stderr)
        return 2
    report = Report()
    venv = os.path.relpath(sys.prefix)
    report.check(f"tools installed in {venv} ({' '.join(TOOLS)})", install_tools)
    if report.failures:
        print("cannot validate without the tools", file=sys.stderr)
        return 1

    report.check("hadolint Dockerfile", hadolint_passes)
    report.check("Dockerfile: the image runs as a non-root user", image_runs_as_non_root)
    report.check("Dockerfile: the production image has no sandbox", image_has_no_sandbox)
    report.check(
        "entrypoint.sh dispatch and {password} substitution", entrypoint_dispatches_with_secrets
    )
    report.check(
        "entrypoint.sh sandbox + healthcheck sandbox (live, key from *_FILE)",
        payments_sandbox_takes_key_from_file,
    )
    report.check(
        "entrypoint.sh notifications-sandbox + healthcheck "
        "(live: SMTP to Maildir, keys from *_FILE)",
        notifications_sandbox_mails_and_takes_keys_from_files,
    )
    report.check(
        "postgres init script and pg_hba.conf: k8s copies identical to swarm's",
        init_script_copies_identical,
    )

    swarm = report.check("docker-compose -f swarm/stack.yml config -q", swarm_stack)
    swarm_checks = [
        ("swarm: every /run/secrets path in the environment is mounted", swarm_secrets_mounted),
        ("swarm: every rule, service and dashboard monitored", swarm_monitors_everything),
        *topics("swarm"),
        (f"swarm: {RATE_LIMITS[0]}", RATE_LIMITS[1]),
        (f"swarm: {METRICS}", gateway_metrics_authenticated),
    ]
    report.check_all(swarm_checks, swarm, "docker-compose could not read swarm/stack.yml")
    report.check("docker stack config -c swarm/stack.yml", docker_stack_accepts)
    report.check(
        "promtool check config (swarm, k8s), amtool check-config (alertmanager)",
        monitoring_configs_valid,
    )

    # Before the overlays: their metrics check reads the Prometheus it runs.
    monitoring = report.check(
        "kubectl kustomize k8s/monitoring (its generated ConfigMaps current)", k8s_monitoring
    )
    report.check_all(
        [
            (
                f"kubernetes-validate --strict -k {KUBERNETES_VERSION} (monitoring)",
                k8s_schemas_valid,
            )
        ],
        monitoring,
        "kubectl could not render k8s/monitoring",
    )

    for overlay, version in (
        ("dev", KUBERNETES_VERSION),
        ("prod", KUBERNETES_VERSION),
        ("ha", HA_KUBERNETES_VERSION),
    ):
        k8s = report.check(f"kubectl kustomize k8s/overlays/{overlay}", k8s_overlay, overlay)
        k8s_checks = [
            (
                f"kubernetes-validate --strict -k {version} ({overlay})",
                partial(k8s_schemas_valid, version=version),
            ),
            (f"k8s {overlay}: every *_FILE(S) path is a mounted secret item", k8s_secrets_mounted),
            *topics(f"k8s {overlay}"),
            (
                f"k8s {overlay}: one autoscaler per Deployment, and no replicas field under it",
                one_autoscaler_per_deployment,
            ),
            (
                f"k8s {overlay}: k8s/monitoring scrapes every service on its announced port",
                k8s_monitors_everything,
            ),
            (
                f"k8s {overlay}: {METRICS}",
                partial(gateway_metrics_authenticated, monitoring=monitoring),
            ),
        ]
        k8s_checks.append(
            (
                f"k8s {overlay}: custom resources valid against k8s/crds "
                "(strict schema, CEL rules)",
                custom_resources_valid,
            )
        )
        if overlay != "dev":
            k8s_checks += [
                (f"k8s {overlay}: {RATE_LIMITS[0]}", RATE_LIMITS[1]),
                (f"k8s {overlay}: {INGRESS[0]}", INGRESS[1]),
            ]
        if overlay == "ha":
            k8s_checks += [
                (
                    "k8s ha: every service scaled by KEDA on CPU and on its queues' depth",
                    services_scaled_on_their_queues,
                ),
                (
                    "k8s ha: the ResourceQuota admits full scale; containers fit the LimitRange",
                    quota_admits_full_scale,
                ),
            ]
        report.check_all(k8s_checks, k8s, f"kubectl could not render k8s/overlays/{overlay}")

    # Warnings and errors fail the check; info/style notes are left to review
    # (SHELLCHECK_SEVERITY=style to see them all).
    severity = os.environ.get("SHELLCHECK_SEVERITY", "warning")
    report.check(
        f"shellcheck -S {severity} ({len(shell_scripts())} scripts in ops/ swarm/ k8s/)",
        shellcheck_passes,
        severity,
    )

    if report.failures:
        print(f"validate-deploy: {report.failures} check(s) failed")
        return 1
    print("validate-deploy: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
