# syntax=docker/dockerfile:1
#
# One image for every Python process of the platform (services, gateway,
# migrations, probes); ops/docker/entrypoint.sh picks the process at start.
# See docs/RUNTIME-CONTRACT.md. The provider sandboxes (sandboxes/) are for
# development and staging only: the default target, runtime, has none of them;
# the `sandbox` target is runtime plus the sandboxes.
#
#   docker build -t fintech/platform:dev .
#   docker run --rm fintech/platform:dev service auth
#   docker build --target sandbox -t fintech/platform-sandbox:dev .
#   docker run --rm fintech/platform-sandbox:dev sandbox
#
# Needs BuildKit (the default builder since Docker 23) for the cache and bind
# mounts below.

# ---------------------------------------------------------------------------
# builder: resolve and build every wheel (project + runtime dependencies, and
# the `sandbox` extra's). Nothing from this stage but wheels reaches an image.
# ---------------------------------------------------------------------------
FROM python:3.11-slim-bookworm AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1

WORKDIR /src

# Globs so that whichever packaging files exist are copied (a missing one is
# not an error as long as one of them matches).
COPY setup.cf[g] setup.p[y] pyproject.tom[l] README.m[d] ./
COPY services/ services/
COPY gateway/ gateway/
COPY shared/ shared/

# The project, its install_requires and the [sandbox] extra (which only the
# sandbox target installs); [dev] is never part of an image. The pip cache
# survives between builds, so a source-only change does not re-download
# dependencies.
RUN --mount=type=cache,target=/root/.cache/pip \
    pip wheel --wheel-dir /wheels '.[sandbox]'

# ---------------------------------------------------------------------------
# platform: python slim + the wheels + the source tree at /app, run as non-root.
# What production runs (the runtime target at the end is this stage).
# ---------------------------------------------------------------------------
FROM python:3.11-slim-bookworm AS platform

LABEL org.opencontainers.image.title="fintech-platform" \
      org.opencontainers.image.description="Nameko services and Flask gateway of the fintech platform"

# DATA_DIR is the only path the processes write to (SQLite files and dev keys
# when no PostgreSQL/keys are configured); it is a volume in k8s and swarm.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    DATA_DIR=/app/var

# pg_dump and pg_restore for `entrypoint.sh backup` (ops/backup.py): the
# client of the server's major version (Debian 12: PostgreSQL 15).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends postgresql-client \
    && rm -rf /var/lib/apt/lists/*

# Fixed numeric ids: Kubernetes' runAsNonRoot can only verify a numeric USER.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-log-init \
       --home-dir /home/app --create-home --shell /usr/sbin/nologin app

# The wheels are bind-mounted from the builder, so they never form a layer of
# this image; --no-index guarantees nothing is fetched at this point. The
# project's wheel brings its install_requires, not the [sandbox] extra.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels /wheels/fintech_services-*.whl

WORKDIR /app

# The source stays owned by root: the app user can read but not modify it.
# config.yml, gateway/gunicorn.conf.py and the Alembic migrations are read
# from here at run time (the contract's commands run from /app).
COPY setup.cf[g] setup.p[y] pyproject.tom[l] README.m[d] ./
COPY config.yml ./
COPY services/ services/
COPY gateway/ gateway/
COPY shared/ shared/
COPY --chmod=0755 ops/docker/ ops/docker/
COPY ops/backup.py ops/backup.py

# Byte-compile at build time: the root filesystem is read-only in k8s and
# PYTHONDONTWRITEBYTECODE is set, so nothing could be cached at run time.
RUN python -m compileall -q services gateway shared ops/backup.py \
    && install -d -o app -g app -m 0750 /app/var

USER 10001:10001

# gateway HTTP. The services listen on nothing: they only talk AMQP.
EXPOSE 8000

# No HEALTHCHECK here: the probe depends on which process the container runs;
# swarm/stack.yml and k8s/ define one per process with `entrypoint.sh healthcheck`.
ENTRYPOINT ["/app/ops/docker/entrypoint.sh"]
CMD ["help"]

# ---------------------------------------------------------------------------
# sandbox: the platform plus the provider sandboxes (sandboxes/, and
# aiosmtpd from the [sandbox] extra), for the development deployments'
# payments-sandbox and notifications-sandbox (k8s/base, swarm/stack.yml).
# ---------------------------------------------------------------------------
FROM platform AS sandbox

USER 0
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels /wheels/aiosmtpd-*.whl
COPY sandboxes/ sandboxes/
RUN python -m compileall -q sandboxes
USER 10001:10001

# payment provider sandbox HTTP; notification providers sandbox SMTP and HTTP.
EXPOSE 8100 8025 8110

# ---------------------------------------------------------------------------
# runtime (the default target, last): the platform as production runs it.
# ---------------------------------------------------------------------------
FROM platform AS runtime
