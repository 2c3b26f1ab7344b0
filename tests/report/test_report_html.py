"""The run report page: self-contained, every section filled from the run directory, earlier
runs archived and listed; rendered by a real headless Chromium (screenshot pixels where the
memory bars are, no request leaving the machine). Skipped with a message where Chromium is absent."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from ascend.report import render_html, write_run_report
from ascend.report.charts import PARTS

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def make_run(run_dir: Path) -> dict:
    """A run directory as `ascend run` leaves it: the real plan of a built-in recipe, smoke and eval results."""
    from ascend.plan import plan_recipe
    from ascend.recipe import load_recipe

    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "plan.json").write_text(json.dumps(plan_recipe(load_recipe("glm5/a3-w8a8", deploy=False)).as_dict(), default=str))
    (run_dir / "smoke.json").write_text(json.dumps({"checks": [
        {"name": "chat", "status": "pass", "seconds": 0.5, "detail": "said hello"},
        {"name": "tools", "status": "fail", "seconds": 0.2, "detail": "no tool call"}]}))
    (run_dir / "eval.json").write_text(json.dumps({"thinking": False, "tasks": [
        {"name": "gsm8k", "kind": "math", "source": "modelscope:modelscope/gsm8k", "samples": 50, "score": 0.94,
         "threshold": 0.9, "passed": True},
        {"name": "ceval", "kind": "choice", "source": "ceval.jsonl", "samples": 20, "score": 0.5, "threshold": 0.8, "passed": False}]}))
    return {
        "recipe": "glm5/a3-w8a8", "recipe_hash": "abc123", "run_dir": str(run_dir), "started_at": "2026-12-02 04:00:00 UTC",
        "ok": False, "verdict": "FAILED at eval — 7 of 8 stages done in 99.0 s",
        "stages": [
            {"stage": "convert", "status": "ok", "summary": "w8a8 -> /out: 2 weight file(s)", "seconds": 10.0,
             "details": {"files_written": 2, "bytes_written": 50_000_000, "peak_rss_bytes": 2**30}},
            {"stage": "verify", "status": "ok", "summary": "418/418 tensors match", "seconds": 1.0, "details": {}},
            {"stage": "eval", "status": "failed", "summary": "below threshold: ceval", "seconds": 3.0,
             "details": {"tasks": {"gsm8k": {"score": 0.94}, "ceval": {"score": 0.5}}}},
        ],
    }


def test_page_sections_and_history(tmp_path):
    run = tmp_path / "run"
    report = make_run(run)
    write_run_report(run, report)
    second = dict(report, started_at="2026-12-02 05:00:00 UTC", verdict="OK — 8 of 8 stages done in 90.0 s", ok=True)
    page = write_run_report(run, second)
    write_run_report(run, second)  # the same second again: archived beside it, not over it
    assert sorted(p.name for p in (run / "history").glob("*.json")) == [
        "2026-12-02T04-00-00Z.json", "2026-12-02T05-00-00Z-2.json", "2026-12-02T05-00-00Z.json"]
    html = page.read_text()
    # memory chart: one rect per non-zero part of the one device class of a3-w8a8 (16 equal ranks)
    assert html.count('<svg class="chart" id="memory-chart"') == 1
    assert {m for m in re.findall(r'data-part="([^"]+)"', html)} == {"weights", "KV cache", "HCCL", "workspace", "reserve"}
    assert "capacity 64.0" in html  # Atlas A3 die: 64 GB
    assert "50.0 MB" in html and "5.0 MB/s" in html and "1.00 GiB" in html  # conversion figures and rate
    assert "no tool call" in html and "0.500" in html and "0.800" in html  # smoke + eval with threshold
    assert html.count("FAILED at eval") == 1 and html.count("OK — 8 of 8") == 3  # verdict line + two history rows


def test_page_is_self_contained(tmp_path):
    run = tmp_path / "run"
    html = render_html(run, make_run(run))
    assert not re.search(r"https?://", html), "the page must not reference any URL"
    assert not re.search(r"""(src|href)\s*=\s*["'](?!data:|#)""", html), "only inline (data:) resources"
    assert "<style>" in html


def _chromium(*args: str, tmp: Path) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp / 'profile'}",
           "--host-resolver-rules=MAP * ~NOTFOUND", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def page_requests(netlog: Path) -> tuple[list[str], list[str]]:
    """From a Chromium net log: URLs the *page* asked for (requests with an initiator; the
    browser's own service requests have ``not an origin``) and addresses connected to over TCP."""
    d = json.loads(netlog.read_text())
    types = {v: k for k, v in d["constants"]["logEventTypes"].items()}
    asked, connected = [], []
    for e in d["events"]:
        kind, p = types.get(e["type"]), e.get("params") or {}
        if kind == "URL_REQUEST_START_JOB" and p.get("url") and p.get("initiator") != "not an origin":
            asked.append(p.get("url", ""))
        if kind == "TCP_CONNECT" and p.get("address_list"):
            connected += [a for a in p["address_list"] if not a.startswith(("127.", "[::1]"))]
    return asked, connected


def screenshot(page: Path, tmp: Path) -> tuple[Path, Path]:
    shot, netlog = tmp / f"{page.stem}.png", tmp / f"{page.stem}-net.json"
    res = _chromium("--window-size=1200,1400", f"--screenshot={shot}", f"--log-net-log={netlog}", page.as_uri(), tmp=tmp)
    assert shot.is_file() and netlog.is_file(), res.stderr[-2000:]
    return shot, netlog


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium): browser rendering not checked")
def test_chromium_renders_charts_and_makes_no_request(tmp_path):
    from PIL import Image

    run = tmp_path / "run"
    page = write_run_report(run, make_run(run))
    shot, netlog = screenshot(page, tmp_path)
    counts = {colour: n for n, colour in Image.open(shot).convert("RGB").getcolors(maxcolors=2**24)}
    for name, _, hex_colour in PARTS:  # every part of the stacked bar is painted
        rgb = tuple(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
        assert counts.get(rgb, 0) > 20, f"{name} bar ({hex_colour}) not rendered"
    weights = tuple(int(PARTS[0][2][i:i + 2], 16) for i in (1, 3, 5))
    assert counts[weights] > 2000  # the weights bar is the big one
    asked, connected = page_requests(netlog)
    assert asked == [] and connected == []

    # the check can fail: the same page with one external image is caught
    leaky = tmp_path / "leaky.html"
    leaky.write_text(page.read_text().replace("<body>", '<body><img src="http://example.invalid/x.png">'))
    asked, _ = page_requests(screenshot(leaky, tmp_path)[1])
    assert asked == ["http://example.invalid/x.png"]


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed: browser rendering not checked")
def test_chromium_lays_out_the_svg_chart(tmp_path):
    """After layout the chart element is in the DOM with its bars (``--dump-dom`` serialises the rendered page)."""
    run = tmp_path / "run"
    page = write_run_report(run, make_run(run))
    res = _chromium("--dump-dom", page.as_uri(), tmp=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    dom = res.stdout
    assert 'id="memory-chart"' in dom and dom.count('class="bar"') == 5
    heights = [float(h) for h in re.findall(r'class="bar"[^>]*height="([\d.]+)"', dom)]
    assert heights and all(h > 0 for h in heights)


def test_bench_section_embeds_the_charts(tmp_path, monkeypatch):
    """Through the bench module's API (``ascend.bench.load_bench``), here a stand-in: its PNG
    charts are embedded as data URIs and its levels tabulated."""
    import base64
    import sys
    import types

    from PIL import Image

    run = tmp_path / "run"
    report = make_run(run)
    (run / "bench").mkdir()
    Image.new("RGB", (40, 30), (10, 200, 30)).save(run / "bench" / "throughput.png")
    data = {"charts": {"throughput": "throughput.png"}, "levels": [
        {"concurrency": 4, "input_len": 128, "output_len": 32, "requests_per_s": 2.5, "output_tokens_per_s": 80.0,
         "ttft_ms": {"p50": 120.0}, "tpot_ms": {"p50": 9.5}, "errors": 0}]}
    monkeypatch.setitem(sys.modules, "ascend.bench", types.SimpleNamespace(load_bench=lambda d: data if Path(d) == run else None))
    html = render_html(run, report)
    b64 = re.search(r'src="data:image/png;base64,([^"]+)"', html).group(1)
    assert base64.b64decode(b64) == (run / "bench" / "throughput.png").read_bytes()
    assert "<td>80.00</td>" in html and "<td>120.00</td>" in html and "<td>9.50</td>" in html
    monkeypatch.setitem(sys.modules, "ascend.bench", None)  # the module absent: said so, no error
    assert "the bench module is not part of this installation" in render_html(run, report)
