"""The API explorer at /docs: Swagger UI over /openapi.json, in a real browser.

Headless Chromium (Debian's `chromium`; ops/scripts/ensure-chromium.sh
installs it, CHROMIUM=/path names another) loads the page with every
request outside the gateway sent to a dead proxy, so a script or style
fetched from a CDN would leave the page blank.
"""

import os
import shutil
import subprocess
from html.parser import HTMLParser
from urllib.parse import urlsplit

import pytest

HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


def _chromium() -> str:
    found = os.environ.get("CHROMIUM") or shutil.which("chromium")
    if not found or not os.access(found, os.X_OK):
        pytest.skip(
            "chromium is not installed, so the API explorer cannot be opened in a browser. "
            "Run `sudo ops/scripts/ensure-chromium.sh` (installs Debian's `chromium`), "
            "or set CHROMIUM=/path/to/chromium."
        )
    return found


def _rendered_dom(url: str, profile) -> str:
    """The page's DOM after its scripts ran, with no way out but to `url`'s host."""
    result = subprocess.run(
        [
            _chromium(),
            "--headless",
            "--no-sandbox",  # tests may run as root, where the sandbox refuses to start
            "--disable-gpu",
            f"--user-data-dir={profile}",
            "--proxy-server=127.0.0.1:9",  # nothing listens there: the internet is gone
            f"--proxy-bypass-list={urlsplit(url).hostname}",
            "--virtual-time-budget=15000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


class _Explorer(HTMLParser):
    """What Swagger UI rendered: its operations, and where the page loaded from."""

    def __init__(self):
        super().__init__()
        self.operations: set[tuple[str, str]] = set()
        self.assets: list[str] = []
        self._method = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        classes = (attrs.get("class") or "").split()
        if tag == "div" and "opblock" in classes:
            methods = [c.removeprefix("opblock-") for c in classes if c.startswith("opblock-")]
            self._method = methods[0] if methods else None
        elif "opblock-summary-path" in classes and self._method:
            self.operations.add((self._method, attrs["data-path"]))
        elif tag == "script" and attrs.get("src"):
            self.assets.append(attrs["src"])
        elif tag == "link" and attrs.get("href"):
            self.assets.append(attrs["href"])


def test_the_explorer_lists_every_operation_of_the_openapi_document_offline(api, tmp_path):
    spec = api.get("/openapi.json").json()
    documented = {
        (method, path)
        for path, item in spec["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }

    page = _Explorer()
    page.feed(_rendered_dom(api.base_url + "/docs", tmp_path / "chromium"))

    assert page.operations == documented
    assert ("post", "/v1/transfers") in page.operations
    assert ("get", "/v1/accounts/{account_id}") in page.operations
    # Everything the page loads is served by the gateway itself.
    assert page.assets
    assert all(asset.startswith("/docs/") for asset in page.assets), page.assets


def test_the_explorer_is_public_and_not_part_of_the_api(api):
    page = api.get("/docs")  # no token: like /openapi.json
    assert page.status_code == 200
    assert page.url == api.base_url + "/docs/"
    assert "swagger-ui-bundle.js" in page.text
    bundle = api.get("/docs/swagger-ui-bundle.js")
    assert bundle.status_code == 200
    assert "javascript" in bundle.headers["Content-Type"]

    assert not [path for path in api.get("/openapi.json").json()["paths"] if "docs" in path]
    # One metrics label for all of the explorer's files, not one per file.
    metrics = api.get("/metrics").text
    assert 'endpoint="/docs/<path:path>"' in metrics
    assert "swagger-ui-bundle.js" not in metrics
