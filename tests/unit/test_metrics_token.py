"""The gateway's /metrics behind a bearer token (METRICS_TOKEN or METRICS_TOKEN_FILE),
open only in development, and the configuration of the local Prometheus that
sends the token. Under gunicorn, scraped by a real Prometheus:
tests/e2e/test_metrics_token.py."""

import pytest

from ops.scripts import prometheus as local_prometheus
from shared.config import ConfigError
from tests.unit.helpers import gateway_app

TOKEN = "0123456789abcdef0123456789abcdef"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in ("ENVIRONMENT", "METRICS_TOKEN", "METRICS_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)


def scrape(client, authorization: str | None = None):
    headers = {"Authorization": authorization} if authorization is not None else {}
    return client.get("/metrics", headers=headers)


def assert_refused(response):
    assert response.status_code == 401
    assert response.mimetype == "application/problem+json"
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="metrics"'
    assert response.get_json()["code"] == "unauthenticated"
    assert b"gateway_http_requests_total" not in response.data


def test_with_a_token_a_scrape_without_it_or_with_another_is_refused():
    client = gateway_app(METRICS_TOKEN=TOKEN).test_client()

    assert_refused(scrape(client))
    assert_refused(scrape(client, f"Bearer {TOKEN[:-1]}x"))
    assert_refused(scrape(client, f"Basic {TOKEN}"))
    assert_refused(scrape(client, "Bearer"))


def test_with_the_token_the_metrics_are_served():
    client = gateway_app(METRICS_TOKEN=TOKEN).test_client()
    client.get("/health/live")

    response = scrape(client, f"Bearer {TOKEN}")

    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    assert b"gateway_http_requests_total" in response.data
    assert scrape(client, f"bearer  {TOKEN}").status_code == 200  # the scheme has no case


def test_the_token_is_read_from_its_file_without_the_trailing_newline(monkeypatch, tmp_path):
    secret = tmp_path / "metrics_token"
    secret.write_text(TOKEN + "\n")
    monkeypatch.setenv("METRICS_TOKEN_FILE", str(secret))
    client = gateway_app().test_client()

    assert_refused(scrape(client))
    assert scrape(client, f"Bearer {TOKEN}").status_code == 200


@pytest.mark.parametrize(
    ("content", "plain", "message"),
    [
        (TOKEN, TOKEN, "both METRICS_TOKEN and METRICS_TOKEN_FILE are set"),
        ("\n", None, "is empty"),
        ("x" * (64 * 1024 + 1), None, "larger than 64 KiB"),
        ("two words", None, "printable ASCII without spaces"),
    ],
)
def test_a_token_file_that_cannot_be_used_stops_the_gateway(
    monkeypatch, tmp_path, content, plain, message
):
    secret = tmp_path / "metrics_token"
    secret.write_text(content)
    monkeypatch.setenv("METRICS_TOKEN_FILE", str(secret))
    if plain is not None:
        monkeypatch.setenv("METRICS_TOKEN", plain)
    with pytest.raises(ConfigError, match=message):
        gateway_app()


def test_an_unreadable_token_file_stops_the_gateway(monkeypatch, tmp_path):
    monkeypatch.setenv("METRICS_TOKEN_FILE", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="METRICS_TOKEN_FILE: cannot read secret file"):
        gateway_app()


def test_an_empty_token_file_variable_is_ignored(monkeypatch):
    monkeypatch.setenv("METRICS_TOKEN_FILE", "")
    assert scrape(gateway_app().test_client()).status_code == 200


def test_in_development_without_a_token_the_metrics_stay_open():
    response = scrape(gateway_app().test_client())
    assert response.status_code == 200
    assert b"gateway_http_requests_total" in response.data


def test_in_production_the_gateway_refuses_to_start_without_a_token(monkeypatch):
    monkeypatch.setenv("ENVIRONMENT", "production")
    with pytest.raises(
        ConfigError, match=r"METRICS_TOKEN \(or METRICS_TOKEN_FILE\) is required in production"
    ):
        gateway_app()


def test_in_production_with_a_token_the_metrics_need_it(monkeypatch):
    monkeypatch.setenv("ENVIRONMENT", "production")
    client = gateway_app(METRICS_TOKEN=TOKEN).test_client()
    assert_refused(scrape(client))
    assert scrape(client, f"Bearer {TOKEN}").status_code == 200


def test_the_scrapes_are_not_rate_limited(monkeypatch):
    client = gateway_app(METRICS_TOKEN=TOKEN, RATELIMIT_DEFAULT="2 per minute").test_client()
    statuses = {scrape(client, f"Bearer {TOKEN}").status_code for _ in range(5)}
    statuses |= {scrape(client).status_code for _ in range(5)}
    assert statuses == {200, 401}


# The local Prometheus of `make run` (ops/scripts/prometheus.py).


def gateway_job(config: dict) -> dict:
    return next(job for job in config["scrape_configs"] if job["job_name"] == "gateway")


def test_the_local_prometheus_sends_no_token_when_the_gateway_has_none(tmp_path):
    environ = {"GATEWAY_PORT": "8000"}
    token_file = local_prometheus.gateway_token_file(environ, tmp_path)
    config = local_prometheus.configuration(
        local_prometheus.targets(environ), [], gateway_token_file=token_file
    )
    assert token_file is None
    assert "authorization" not in gateway_job(config)


def test_the_local_prometheus_sends_the_gateways_token_to_the_gateway_only(tmp_path):
    secret = tmp_path / "given"
    secret.write_text(TOKEN)
    environ = {"GATEWAY_PORT": "8000", "AUTH_METRICS_PORT": "9101"}
    for given, written in (
        ({"METRICS_TOKEN_FILE": str(secret)}, secret),
        ({"METRICS_TOKEN": TOKEN}, tmp_path / "metrics-token"),
    ):
        token_file = local_prometheus.gateway_token_file({**environ, **given}, tmp_path)
        config = local_prometheus.configuration(
            local_prometheus.targets(environ), [], gateway_token_file=token_file
        )
        assert token_file == written
        assert written.read_text() == TOKEN
        assert gateway_job(config)["authorization"] == {
            "type": "Bearer",
            "credentials_file": str(written),
        }
        auth = next(job for job in config["scrape_configs"] if job["job_name"] == "auth")
        assert "authorization" not in auth
    assert oct((tmp_path / "metrics-token").stat().st_mode & 0o777) == "0o600"
