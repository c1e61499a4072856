"""The gateway's app factory."""

import http
import logging
import time

from apispec import BasePlugin
from flask import Flask, g, request
from flask_smorest import Api
from flask_smorest.utils import prepare_response
from flask_swagger_ui import get_swaggerui_blueprint
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from werkzeug.middleware.proxy_fix import ProxyFix

from gateway import metrics, problems, ratelimit, schemas, settings
from gateway.blueprints import (
    accounts,
    analytics,
    audit,
    auth,
    health,
    notifications,
    operations,
    reconciliation,
    risk_admin,
    transfers,
    webhooks,
)
from gateway.extensions import Platform, limiter
from shared import correlation, tracing
from shared.config import is_production as config_is_production

log = logging.getLogger("gateway.access")


class _Api(Api):
    """flask-smorest, with its error bodies replaced by problem+json, and
    documented as such in /openapi.json."""

    ERROR_SCHEMA = schemas.Problem

    def handle_http_exception(self, error):
        return problems.handle_http_exception(error)

    def _register_responses(self):
        """The responses flask-smorest names for each status (UNPROCESSABLE_ENTITY
        for a request that fails its schema, DEFAULT_ERROR for any other
        error), with every error a Problem at application/problem+json: its
        own registers them at application/json with a body we never send."""
        for status in http.HTTPStatus:
            response = {"description": status.phrase}
            if status >= 400:
                response["schema"] = self.ERROR_SCHEMA
            prepare_response(response, self.spec, problems.MEDIA_TYPE)
            self.spec.components.response(status.name, response, lazy=True)
        response = {"description": "An error, as a problem", "schema": self.ERROR_SCHEMA}
        prepare_response(response, self.spec, problems.MEDIA_TYPE)
        self.spec.components.response(self.DEFAULT_ERROR_RESPONSE_NAME, response, lazy=True)


class _SchemaExtras(BasePlugin):
    """A schema's `OPENAPI` dict joins its component in /openapi.json: rules
    over the whole object that fields cannot show (minProperties, ...)."""

    def schema_helper(self, name, definition, **kwargs):
        return getattr(kwargs.get("schema"), "OPENAPI", None)


def create_app(config: dict | None = None) -> Flask:
    app = Flask(__name__)
    app.config.update(settings.from_env())
    app.config.update(config or {})
    app.config["RATELIMIT_STORAGE_URI"] = ratelimit.storage_uri(app.config["RATELIMIT_STORAGE_URI"])
    if app.config["TRUSTED_PROXIES"]:
        hops = app.config["TRUSTED_PROXIES"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)

    api = _Api(app, spec_kwargs={"servers": [{"url": "/"}], "extra_plugins": [_SchemaExtras()]})
    api.spec.components.security_scheme(
        "bearerAuth", {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    )
    for blueprint in (
        auth.blp,
        accounts.blp,
        transfers.blp,
        webhooks.blp,
        analytics.blp,
        notifications.blp,
        risk_admin.blp,
        reconciliation.blp,
        operations.blp,
        audit.blp,
    ):
        api.register_blueprint(blueprint)
    app.register_blueprint(health.blp)
    _init_api_explorer(app)

    # First registered: binds the correlation id before any other hook runs,
    # and (after_request runs in reverse) finishes the response last.
    _init_request_context(app)
    limiter.init_app(app)
    problems.init_app(app)
    metrics.init_app(app)
    app.extensions["fintech"] = Platform(app.config)
    if config_is_production() and ratelimit.per_process(app.config["RATELIMIT_STORAGE_URI"]):
        log.warning(
            "rate limits are counted per gateway process (memory://); set "
            "RATE_LIMIT_STORAGE_URI=redis://... so every process shares them"
        )
    return app


def _init_api_explorer(app: Flask) -> None:
    """Swagger UI at /docs/, reading /openapi.json.

    Its scripts and styles come from the installed flask-swagger-ui package,
    not a CDN, so the page works with no internet. A plain Flask blueprint:
    not an API operation, so it stays out of the OpenAPI document.
    """
    spec_url = app.config["OPENAPI_URL_PREFIX"].rstrip("/") + "/" + app.config["OPENAPI_JSON_PATH"]
    explorer = get_swaggerui_blueprint(
        app.config["API_EXPLORER_PATH"],
        spec_url,
        config={"app_name": app.config["API_TITLE"]},
        blueprint_name="api_explorer",
    )
    app.register_blueprint(explorer)


# Requests that are not work: probes and scrapes make no spans.
_UNTRACED = ("/health/", "/metrics")


def _start_span() -> None:
    """A span per request, child of the client's `traceparent` if it sent one
    (shared/tracing.py); the RPCs made for it carry it on."""
    if not tracing.setup("gateway") or request.path.startswith(_UNTRACED):
        return
    route = request.url_rule.rule if request.url_rule else "unmatched"
    span = tracing.tracer().start_span(
        f"{request.method} {route}",
        context=tracing.context_of(request.headers.get(tracing.HEADER)),
        kind=SpanKind.SERVER,
        attributes={
            "http.request.method": request.method,
            "http.route": route,
            "correlation_id": g.correlation_id,
        },
    )
    g.span, g.span_token = span, otel_context.attach(trace.set_span_in_context(span))


def _end_span(response=None, error: BaseException | None = None) -> None:
    span = g.pop("span", None)
    if span is None:
        return
    if response is not None:
        span.set_attribute("http.response.status_code", response.status_code)
        if response.status_code >= 500 and error is None:
            span.set_status(Status(StatusCode.ERROR, str(response.status_code)))
    if "principal" in g:
        span.set_attribute("user_id", g.principal.user_id)
    tracing.end(span, error)
    otel_context.detach(g.pop("span_token"))


def _init_request_context(app: Flask) -> None:
    @app.before_request
    def _bind_correlation_id():
        g.correlation_id = correlation.sanitize(request.headers.get(correlation.HEADER))
        g.correlation_token = correlation.bind(g.correlation_id)
        g.request_started = time.perf_counter()
        _start_span()

    @app.after_request
    def _finish(response):
        response.headers[correlation.HEADER] = g.get("correlation_id") or correlation.new_id()
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers["X-Content-Type-Options"] = "nosniff"
        # Never framed (clickjacking), by old browsers' header and new ones'.
        response.headers["X-Frame-Options"] = "DENY"
        response.headers.setdefault("Content-Security-Policy", "frame-ancestors 'none'")
        if request.is_secure:  # over TLS, or a trusted proxy's X-Forwarded-Proto: https
            response.headers["Strict-Transport-Security"] = "max-age=31536000; includeSubDomains"
        # Flask-Limiter sends Retry-After on every response. It means
        # something only when the client is asked to come back later: a 429
        # (the limiter's own value) or a 503 (ours).
        if response.status_code == 503:
            response.headers["Retry-After"] = problems.UNAVAILABLE_RETRY_AFTER
        elif response.status_code != 429:
            response.headers.pop("Retry-After", None)
        if response.status_code == 401:
            response.headers.setdefault("WWW-Authenticate", 'Bearer realm="fintech"')
        if "request_started" in g:
            log.info(
                "request",
                extra={
                    "method": request.method,
                    "path": request.path,
                    "status": response.status_code,
                    "duration_ms": round((time.perf_counter() - g.request_started) * 1000, 2),
                    # Who, when a token was verified (never the token itself).
                    "user_id": g.principal.user_id if "principal" in g else None,
                },
            )
        _end_span(response)
        return response

    @app.teardown_request
    def _unbind(exc):
        _end_span(error=exc)  # when no response came (an error nothing handled)
        token = g.pop("correlation_token", None)
        if token is not None:
            correlation.reset(token)
