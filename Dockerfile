# syntax=docker/dockerfile:1
#
# One image for every Python process of the platform (services, gateway,
# payment provider sandbox, migrations, probes); ops/docker/entrypoint.sh
# picks the process at start.
# See docs/RUNTIME-CONTRACT.md.
#
#   docker build -t fintech/platform:dev .
#   docker run --rm fintech/platform:dev service auth
#
# Needs BuildKit (the default builder since Docker 23) for the cache and bind
# mounts below.

# ---------------------------------------------------------------------------
# builder: resolve and build every wheel (project + runtime dependencies).
# Nothing from this stage but the wheels reaches the runtime image.
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

# `pip wheel .` builds the project and its install_requires only: extras such
# as [dev] or [test] are never part of the image. The pip cache survives
# between builds, so a source-only change does not re-download dependencies.
RUN --mount=type=cache,target=/root/.cache/pip \
    pip wheel --wheel-dir /wheels .

# ---------------------------------------------------------------------------
# runtime: python slim + the wheels + the source tree at /app, run as non-root.
# ---------------------------------------------------------------------------
FROM python:3.11-slim-bookworm AS runtime

LABEL org.opencontainers.image.title="fintech-platform" \
      org.opencontainers.image.description="Nameko services and Flask gateway of the fintech platform"

# DATA_DIR is the only path the processes write to (SQLite files and dev keys
# when no PostgreSQL/keys are configured); it is a volume in k8s and swarm.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    DATA_DIR=/app/var

# Fixed numeric ids: Kubernetes' runAsNonRoot can only verify a numeric USER.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-log-init \
       --home-dir /home/app --create-home --shell /usr/sbin/nologin app

# The wheels are bind-mounted from the builder, so they never form a layer of
# this image; --no-index guarantees nothing is fetched at this point.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels /wheels/*.whl

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

# Byte-compile at build time: the root filesystem is read-only in k8s and
# PYTHONDONTWRITEBYTECODE is set, so nothing could be cached at run time.
RUN python -m compileall -q services gateway shared \
    && install -d -o app -g app -m 0750 /app/var

USER 10001:10001

# gateway HTTP, payment provider sandbox HTTP (`entrypoint.sh sandbox`; not
# for production). The services listen on nothing: they only talk AMQP.
EXPOSE 8000 8100

# No HEALTHCHECK here: the probe depends on which process the container runs;
# swarm/stack.yml and k8s/ define one per process with `entrypoint.sh healthcheck`.
ENTRYPOINT ["/app/ops/docker/entrypoint.sh"]
CMD ["help"]
