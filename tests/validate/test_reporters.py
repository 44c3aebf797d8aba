"""The four output formats of one report."""

from __future__ import annotations

import json
from typing import Any

from cosgitops.validate import Diagnostic, Report
from cosgitops.validate.report import (
    github_step_summary,
    render_github,
    render_json,
    render_sarif,
    render_text,
)
from cosgitops.validate.rules import RULES

REPORT = Report(
    [
        Diagnostic(
            "derivatives/edge/derivative.yaml",
            7,
            12,
            "error",
            "yaml-implicit-type",
            "YAML reads 1.10 as the number 1.1, not as the string '1.10'",
            "/spec/version",
            'quote it: version: "1.10"',
        ),
        Diagnostic(
            "derivatives/edge/oem/a, b.yaml",
            3,
            5,
            "warning",
            "yip-unknown-key",
            "unknown key 'comands': yip ignores it\n100% sure",
            "/stages/boot/0/comands",
            None,
        ),
    ],
    files_checked=3,
)


def test_text() -> None:
    text = render_text(REPORT)
    lines = text.splitlines()
    assert lines[0] == (
        "derivatives/edge/derivative.yaml:7:12: error[yaml-implicit-type] YAML reads 1.10 as "
        "the number 1.1, not as the string '1.10'"
    )
    assert lines[1] == '  hint: quote it: version: "1.10"'
    assert lines[-1] == "1 error, 1 warning in 3 files"
    assert "\033[" not in text
    colored = render_text(REPORT, color=True)
    assert "\033[31merror[yaml-implicit-type]\033[0m" in colored


def test_text_of_a_clean_report() -> None:
    assert render_text(Report([], 2)) == "ok: 2 files checked, no problems\n"


def test_json_follows_the_contract() -> None:
    data = json.loads(render_json(REPORT))
    assert data["ok"] is False
    first = data["diagnostics"][0]
    assert {"file", "line", "column", "severity", "rule", "message", "pointer"} <= set(first)
    assert first["pointer"] == "/spec/version" and first["severity"] == "error"
    assert data["diagnostics"][1]["severity"] == "warning"


def _check_sarif(document: dict[str, Any]) -> None:
    """The parts of SARIF 2.1.0 that code scanning reads, checked field by field."""
    assert document["version"] == "2.1.0"
    assert document["$schema"].endswith("sarif-2.1.0.json")
    [run] = document["runs"]
    driver = run["tool"]["driver"]
    assert driver["name"] == "cosgitops" and driver["version"]
    ids = [rule["id"] for rule in driver["rules"]]
    assert len(ids) == len(set(ids))
    for rule in driver["rules"]:
        assert rule["shortDescription"]["text"] and rule["help"]["text"]
        assert rule["defaultConfiguration"]["level"] in ("error", "warning", "note", "none")
    for result in run["results"]:
        assert ids[result["ruleIndex"]] == result["ruleId"]
        assert result["level"] in ("error", "warning", "note", "none")
        assert result["message"]["text"]
        [location] = result["locations"]
        physical = location["physicalLocation"]
        assert physical["artifactLocation"]["uri"]
        assert physical["region"]["startLine"] >= 1 and physical["region"]["startColumn"] >= 1


def test_sarif() -> None:
    document = json.loads(render_sarif(REPORT))
    _check_sarif(document)
    results = document["runs"][0]["results"]
    assert results[0]["locations"][0]["physicalLocation"] == {
        "artifactLocation": {
            "uri": "derivatives/edge/derivative.yaml",
            "uriBaseId": "%SRCROOT%",
        },
        "region": {"startLine": 7, "startColumn": 12},
    }
    assert results[1]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == (
        "derivatives/edge/oem/a%2C%20b.yaml"
    )
    assert "hint: quote it" in results[0]["message"]["text"]
    rules = {rule["id"] for rule in document["runs"][0]["tool"]["driver"]["rules"]}
    assert set(RULES) <= rules
    _check_sarif(json.loads(render_sarif(Report([], 0))))


def test_github_annotations_escape_what_they_must() -> None:
    lines = render_github(REPORT).splitlines()
    assert lines[0] == (
        "::error file=derivatives/edge/derivative.yaml,line=7,col=12,"
        "title=cosgitops yaml-implicit-type::YAML reads 1.10 as the number 1.1, not as the "
        "string '1.10'%0Ahint: quote it: version: \"1.10\""
    )
    assert lines[1].startswith("::warning file=derivatives/edge/oem/a%2C b.yaml,line=3,col=5,")
    assert lines[1].endswith("yip ignores it%0A100%25 sure")


def test_github_step_summary_is_a_markdown_table() -> None:
    summary = github_step_summary(REPORT)
    assert summary.startswith("### cosgitops validate failed")
    assert "| :x: | `derivatives/edge/derivative.yaml:7:12` | `yaml-implicit-type` |" in summary
    assert ":warning:" in summary
    assert "### cosgitops validate passed" in github_step_summary(Report([], 1))


def test_every_rule_is_documented() -> None:
    for rule in RULES.values():
        assert rule.summary and rule.help and rule.severity in ("error", "warning")
