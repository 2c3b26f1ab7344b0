"""``runs/<name>/report.html``: one self-contained page about a run (no network: inline CSS,
charts as inline SVG or base64 PNG), built from the run directory's artifacts:

plan.json (memory chart), report.json (stages: conversion figures, verify), verify.json,
smoke.json, bench/ (``ascend.bench.load_bench`` + its PNGs, when that module is installed),
eval.json, and history/*.json (earlier runs of the same recipe, archived, never overwritten).
"""

from __future__ import annotations

import base64
import json
from html import escape
from pathlib import Path
from typing import Any

from ascend.fileio import write_atomic
from ascend.report.charts import memory_svg

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#222;max-width:1100px}
h1{font-size:22px}h2{font-size:17px;border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:28px}
table{border-collapse:collapse;font-size:13px;margin:6px 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f4f4f4}.ok,.pass{color:#1a7f37;font-weight:600}.failed,.fail,.interrupted{color:#c62828;font-weight:600}
.skipped,.skip,.blocked,.not-run{color:#777}.missing{color:#777;font-style:italic}img.chart{max-width:100%;border:1px solid #eee}
.verdict{font-size:16px;font-weight:600}
"""


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _table(head: list[str], rows: list[list[Any]], status_col: int | None = None) -> str:
    out = ["<table><tr>", *(f"<th>{escape(h)}</th>" for h in head), "</tr>"]
    for row in rows:
        out.append("<tr>")
        for i, cell in enumerate(row):
            cls = f' class="{escape(str(cell))}"' if i == status_col else ""
            out.append(f"<td{cls}>{escape('' if cell is None else str(cell))}</td>")
        out.append("</tr>")
    return "".join(out) + "</table>"


def _missing(what: str) -> str:
    return f'<p class="missing">{escape(what)}</p>'


def _stage(report: dict, name: str) -> dict:
    return next((s for s in report.get("stages", []) if s.get("stage") == name), {})


def _latest(run_dir: Path, report: dict, name: str) -> tuple[dict, str]:
    """Stage ``name`` of this run, or of the latest archived run where it ran (``--from serve``
    reuses an earlier conversion): (stage, note naming that run or "")."""
    st = _stage(report, name)
    if st.get("status") in ("ok", "skipped", "failed"):
        return st, ""
    for path in sorted((run_dir / "history").glob("*.json"), reverse=True):
        old = _read_json(path) or {}
        st_old = _stage(old, name)
        if st_old.get("status") in ("ok", "skipped", "failed"):
            return st_old, f"from the run started {old.get('started_at', path.stem)}"
    return st, ""


def _png(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img class="chart" alt="{escape(path.stem)}" src="data:image/png;base64,{data}">'


def section_plan(run_dir: Path) -> str:
    plan = _read_json(run_dir / "plan.json")
    if not plan:
        return _missing("no plan.json (the plan stage did not run)")
    facts = (f"{plan.get('model', '')} on {plan.get('world_size')} x {plan.get('chip')}: attention TP{plan.get('attention_tp')} "
             f"x DP{plan.get('dp')}, EP{plan.get('ep')}; KV for {plan.get('kv_tokens_per_dp_group')} tokens per DP group; "
             f"{'fits' if plan.get('fits') else 'DOES NOT FIT'}")
    return f"<p>{escape(facts)}</p>{memory_svg(plan)}"


def section_convert(run_dir: Path, report: dict) -> str:
    st, note = _latest(run_dir, report, "convert")
    if not st:
        return _missing("the convert stage did not run")
    d = st.get("details") or {}
    secs = st.get("seconds") or 0
    nbytes = d.get("bytes_written")
    rate = f"{nbytes / secs / 1e6:.1f} MB/s" if nbytes and secs else None
    rows = [["status", st.get("status")], ["summary", st.get("summary")], ["files written", d.get("files_written")],
            ["bytes written", f"{nbytes / 1e6:.1f} MB" if nbytes else None], ["time", f"{secs:.1f} s"], ["rate", rate],
            ["peak RSS (largest process)", f"{d['peak_rss_bytes'] / 2**30:.2f} GiB" if d.get("peak_rss_bytes") else "not recorded"]]
    return (f"<p>{escape(note)}</p>" if note else "") + _table(["", ""], [r for r in rows if r[1] is not None])


def section_verify(run_dir: Path, report: dict) -> str:
    (st, note), data = _latest(run_dir, report, "verify"), _read_json(run_dir / "verify.json")
    if not st and not data:
        return _missing("the verify stage did not run")
    status = st.get("status", "")
    out = f'<p class="{escape(status)}">{escape(status)} {escape(note)}</p><p>{escape(st.get("summary", ""))}</p>'
    problems = (data or {}).get("problems") or []
    if problems:
        out += _table(["problem"], [[p] for p in problems[:50]])
    return out


def section_smoke(run_dir: Path) -> str:
    data = _read_json(run_dir / "smoke.json")
    if not data:
        return _missing("no smoke.json (the smoke stage did not run)")
    rows = [[c.get("name"), c.get("status"), f"{c.get('seconds', 0):.2f}", c.get("detail")] for c in data.get("checks", [])]
    return _table(["check", "status", "s", "detail"], rows, status_col=1)


def section_bench(run_dir: Path) -> str:
    try:
        from ascend.bench import load_bench
    except ImportError:
        return _missing("the bench module is not part of this installation")
    data = load_bench(run_dir)
    if not data:
        return _missing("no bench results (the bench stage did not run)")
    charts = [run_dir / "bench" / name for name in (data.get("charts") or {}).values()]
    imgs = "".join(_png(p) for p in charts if p.is_file())
    levels = data.get("levels") or []
    rows = [[lv.get("concurrency"), lv.get("input_len"), lv.get("output_len"), *(_fmt(lv, k) for k in
             ("requests_per_s", "output_tokens_per_s", "ttft_ms", "tpot_ms", "errors"))] for lv in levels]
    table = _table(["concurrency", "in", "out", "req/s", "out tok/s", "TTFT p50 ms", "TPOT p50 ms", "errors"], rows) if rows else ""
    return (imgs or _missing("no bench charts")) + table


def _fmt(d: dict, key: str) -> Any:
    v = d.get(key)
    if isinstance(v, dict):  # latency distributions: {"p50": ..., "p90": ..., "p99": ...}
        v = v.get("p50")
    return f"{v:.2f}" if isinstance(v, float) else v


def section_eval(run_dir: Path) -> str:
    data = _read_json(run_dir / "eval.json")
    if not data:
        return _missing("no eval.json (the eval stage did not run)")
    rows = [[t["name"], t["kind"], t["source"], t["samples"], f"{t['score']:.3f}",
             "-" if t.get("threshold") is None else f"{t['threshold']:.3f}", "pass" if t["passed"] else "fail"]
            for t in data.get("tasks", [])]
    return f"<p>thinking: {'on' if data.get('thinking') else 'off'}</p>" + _table(
        ["task", "kind", "source", "samples", "score", "threshold", "result"], rows, status_col=6)


def section_history(run_dir: Path) -> str:
    rows = []
    for path in sorted((run_dir / "history").glob("*.json"), reverse=True):
        rep = _read_json(path) or {}
        ev = _stage(rep, "eval").get("details", {}).get("tasks", {})
        scores = ", ".join(f"{k} {v.get('score', 0):.3f}" for k, v in ev.items())
        rows.append([rep.get("started_at", path.stem), rep.get("verdict", "?"), rep.get("recipe_hash", ""), scores or "-"])
    return _table(["started", "verdict", "recipe hash", "eval"], rows) if rows else _missing("no earlier runs")


def render_html(run_dir: str | Path, report: dict) -> str:
    run_dir = Path(run_dir)
    stages = _table(["stage", "status", "s", "summary"],
                    [[s["stage"], s["status"], f"{s.get('seconds', 0):.1f}", s["summary"]] for s in report.get("stages", [])],
                    status_col=1)
    body = [
        f"<h1>ascend run {escape(report.get('recipe', ''))}</h1>",
        f'<p class="verdict {"ok" if report.get("ok") else "failed"}">{escape(report.get("verdict", ""))}</p>',
        f"<p>started {escape(report.get('started_at', ''))}; recipe hash {escape(report.get('recipe_hash', ''))}</p>",
        "<h2>Stages</h2>", stages,
        "<h2>Memory per device (plan)</h2>", section_plan(run_dir),
        "<h2>Conversion</h2>", section_convert(run_dir, report),
        "<h2>Verify</h2>", section_verify(run_dir, report),
        "<h2>Smoke checks</h2>", section_smoke(run_dir),
        "<h2>Bench</h2>", section_bench(run_dir),
        "<h2>Eval</h2>", section_eval(run_dir),
        "<h2>Earlier runs</h2>", section_history(run_dir),
    ]
    title = escape(f"ascend run {report.get('recipe', '')}")
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
            f"<style>{CSS}</style></head><body>{''.join(body)}</body></html>\n")


def history_name(report: dict) -> str:
    """``history/<started>.json``: the UTC start time, file-name safe (``2026-12-02T04-51-00Z``)."""
    started = report.get("started_at", "").replace(" UTC", "Z").replace(" ", "T").replace(":", "-")
    return started or "unknown"


def write_run_report(run_dir: str | Path, report: dict) -> Path:
    """Archive ``report`` under ``history/`` (never overwriting an earlier run), then write
    ``report.html`` (which lists the earlier runs)."""
    run_dir = Path(run_dir)
    history = run_dir / "history"
    history.mkdir(parents=True, exist_ok=True)
    name, n = history_name(report), 1
    target = history / f"{name}.json"
    while target.exists():  # two runs started in the same second
        n += 1
        target = history / f"{name}-{n}.json"
    write_atomic(target, json.dumps(report, indent=2, default=str) + "\n")
    page = run_dir / "report.html"
    write_atomic(page, render_html(run_dir, report))
    return page
