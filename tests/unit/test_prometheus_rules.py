"""The Prometheus rules in ops/prometheus/ load, and behave as their tests say.

`promtool check rules` on every file under ops/prometheus/rules/ and
`promtool test rules` on every file under ops/prometheus/tests/; promtool
comes from Debian's `prometheus` package (ops/scripts/ensure-prometheus-tools.sh
installs it; PROMTOOL=/path/to/promtool names another). Without it these
tests fail rather than skip: an alert nobody checked is an alert that may
never fire. Also: every alert has a unit test, and every runbook link an
anchor in docs/RUNBOOKS.md.
"""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from services.accounts.reconciliation import KINDS

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "ops" / "prometheus"
RULES = sorted(p for p in (PROMETHEUS / "rules").rglob("*") if p.is_file())
TESTS = sorted(p for p in (PROMETHEUS / "tests").rglob("*") if p.is_file())
RUNBOOKS = ROOT / "docs" / "RUNBOOKS.md"


def _name(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _promtool() -> str:
    named = os.environ.get("PROMTOOL")
    found = named or shutil.which("promtool")
    if not found or not os.access(found, os.X_OK):
        pytest.fail(
            (f"PROMTOOL={named} is not an executable" if named else "promtool is not installed")
            + ", so the Prometheus rules cannot be checked. "
            "Run ops/scripts/ensure-prometheus-tools.sh (as root it installs Debian's "
            "`prometheus` package; otherwise it says what to do), "
            "or set PROMTOOL=/path/to/promtool.",
            pytrace=False,
        )
    return found


def _run(*args: str) -> None:
    result = subprocess.run(
        [_promtool(), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, (
        f"`promtool {' '.join(args)}` exited {result.returncode}:\n{result.stdout}{result.stderr}"
    )


def test_there_are_rules_and_tests():
    assert RULES, "no rule files under ops/prometheus/rules/"
    assert TESTS, "no rule tests under ops/prometheus/tests/"


@pytest.mark.parametrize("path", RULES, ids=_name)
def test_rules_are_valid(path):
    _run("check", "rules", _name(path))


@pytest.mark.parametrize("path", TESTS, ids=_name)
def test_rules_behave_as_tested(path):
    _run("test", "rules", _name(path))


def _alerts() -> dict[str, dict]:
    alerts = {}
    for path in RULES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    alerts[rule["alert"]] = rule
    return alerts


def _anchors(markdown: str) -> set[str]:
    """Heading anchors as GitHub makes them: lower case, punctuation dropped
    (not `-` or `_`), spaces as hyphens."""
    anchors = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*$", markdown, flags=re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors


def test_every_alert_has_a_unit_test():
    tested = set()
    for path in TESTS:
        for case in yaml.safe_load(path.read_text()).get("tests", []):
            for check in case.get("alert_rule_test", []):
                if check.get("exp_alerts"):
                    tested.add(check["alertname"])
    assert set(_alerts()) - tested == set(), "alerts that no test sees firing"


def test_every_runbook_link_has_its_section():
    anchors = _anchors(RUNBOOKS.read_text())
    for name, rule in _alerts().items():
        url = rule["annotations"]["runbook_url"]
        page, _, anchor = url.partition("#")
        assert page == "docs/RUNBOOKS.md", f"{name}: runbook_url {url!r}"
        assert anchor in anchors, f"{name}: no section #{anchor} in docs/RUNBOOKS.md"
    # ReconciliationDiscrepancies links each kind's own section (#<kind>).
    assert set(KINDS) - anchors == set(), "discrepancy kinds without a section"


def test_every_process_is_watched_for_going_missing():
    """ServiceMissing names every nameko service of the Procfile and the gateway:
    a service added without it would vanish without a page."""
    procfile = (ROOT / "Procfile").read_text()
    services = set(re.findall(r"services\.(\w+)\.service:", procfile)) | {"gateway"}
    expression = _alerts()["ServiceMissing"]["expr"]
    watched = set(re.findall(r'absent\(up\{service="(\w+)"\}\)', expression))
    assert watched == services
