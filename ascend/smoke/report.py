"""Smoke results and their three renderings: a terminal table, JSON and JUnit XML.

A check ends in exactly one of three states: ``pass``, ``fail`` (with what went wrong) or
``skip`` (with why it did not run). ``SmokeReport.ok`` is true when nothing failed.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Status = Literal["pass", "fail", "skip"]


@dataclass
class CheckResult:
    """One check's outcome. ``detail`` says what was seen (pass), what broke (fail) or why not (skip)."""

    name: str
    status: Status
    detail: str = ""
    seconds: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class SmokeReport:
    base_url: str
    model: str
    results: list[CheckResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(r.status != "fail" for r in self.results)

    def counts(self) -> dict[str, int]:
        out = {"pass": 0, "fail": 0, "skip": 0}
        for r in self.results:
            out[r.status] += 1
        return out

    def failed(self) -> list[CheckResult]:
        return [r for r in self.results if r.status == "fail"]

    def summary_line(self) -> str:
        c = self.counts()
        line = f"smoke: {c['pass']} passed, {c['fail']} failed, {c['skip']} skipped in {self.seconds:.1f}s"
        if c["fail"]:
            line += " (failed: " + ", ".join(r.name for r in self.failed()) + ")"
        return line

    def to_dict(self) -> dict[str, Any]:
        return {
            "base_url": self.base_url,
            "model": self.model,
            "ok": self.ok,
            "counts": self.counts(),
            "seconds": round(self.seconds, 3),
            "checks": [asdict(r) | {"seconds": round(r.seconds, 3)} for r in self.results],
        }


def to_json(report: SmokeReport) -> str:
    return json.dumps(report.to_dict(), indent=2) + "\n"


def to_junit(report: SmokeReport) -> str:
    """JUnit XML (one <testsuite>, one <testcase> per check) for CI dashboards."""
    c = report.counts()
    suite = ET.Element(
        "testsuite",
        name="ascend-smoke",
        tests=str(len(report.results)),
        failures=str(c["fail"]),
        skipped=str(c["skip"]),
        errors="0",
        time=f"{report.seconds:.3f}",
    )
    props = ET.SubElement(suite, "properties")
    ET.SubElement(props, "property", name="base_url", value=report.base_url)
    ET.SubElement(props, "property", name="model", value=report.model)
    for r in report.results:
        case = ET.SubElement(suite, "testcase", classname="ascend.smoke", name=r.name, time=f"{r.seconds:.3f}")
        if r.status == "fail":
            ET.SubElement(case, "failure", message=r.detail).text = r.detail
        elif r.status == "skip":
            ET.SubElement(case, "skipped", message=r.detail)
        if r.detail or r.metrics:
            out = r.detail + ("\n" + json.dumps(r.metrics) if r.metrics else "")
            ET.SubElement(case, "system-out").text = out
    ET.indent(suite)
    return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"


def render_table(report: SmokeReport, console: Any) -> None:
    """Print the results as a rich table on ``console`` (a ``rich.console.Console``)."""
    from rich.table import Table

    style = {"pass": "green", "fail": "bold red", "skip": "yellow"}
    table = Table(title=f"smoke: {report.model} @ {report.base_url}", title_justify="left")
    table.add_column("check")
    table.add_column("result")
    table.add_column("time", justify="right")
    table.add_column("detail", overflow="fold")
    for r in report.results:
        table.add_row(r.name, f"[{style[r.status]}]{r.status}[/]", f"{r.seconds:.2f}s", r.detail)
    console.print(table)
    console.print(report.summary_line(), style="bold red" if not report.ok else "bold green", highlight=False)
