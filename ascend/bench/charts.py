"""The two bench charts as PNG (matplotlib's Agg canvas: no display, no pyplot state)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ascend.fileio import atomic_path

THROUGHPUT_PNG = "throughput.png"
LATENCY_PNG = "latency.png"
CHART_FILES = {"throughput": THROUGHPUT_PNG, "latency": LATENCY_PNG}


def _by_workload(levels: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for level in levels:
        groups.setdefault(f"in {level['input_len']} / out {level['output_len']}", []).append(level)
    return {k: sorted(v, key=lambda lv: lv["concurrency"]) for k, v in groups.items()}


def _concurrency_axis(ax: Any, levels: list[dict[str, Any]]) -> None:
    """Log-2 x axis labelled with the swept levels themselves (1, 4, 16, not 2^k)."""
    xs = sorted({lv["concurrency"] for lv in levels})
    ax.set_xscale("log", base=2)
    ax.minorticks_off()
    ax.set_xticks(xs, [str(x) for x in xs])
    ax.set_xlabel("concurrency")
    ax.grid(alpha=0.3)


def _save(fig: Any, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    fig.tight_layout()
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def write_charts(levels: list[dict[str, Any]], out_dir: Path, title: str) -> dict[str, str]:
    """Throughput vs concurrency and latency percentiles vs concurrency; returns {chart: file name}."""
    from matplotlib.figure import Figure

    groups = _by_workload(levels)

    fig = Figure(figsize=(10, 4))
    ax_tok, ax_req = fig.subplots(1, 2)
    for label, rows in groups.items():
        xs = [r["concurrency"] for r in rows]
        ax_tok.plot(xs, [r["output_tokens_per_s"] or 0 for r in rows], marker="o", label=label)
        line = ax_req.plot(xs, [r["requests_per_s"] or 0 for r in rows], marker="o", label=f"{label} requests")[0]
        if any(r["goodput_per_s"] is not None for r in rows):
            ax_req.plot(xs, [r["goodput_per_s"] or 0 for r in rows], marker="x", linestyle="--",
                        color=line.get_color(), label=f"{label} goodput")
    ax_tok.set(title="output throughput", ylabel="tokens / s")
    ax_req.set(title="request throughput", ylabel="requests / s")
    for ax in (ax_tok, ax_req):
        _concurrency_axis(ax, levels)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    _save(fig, out_dir / THROUGHPUT_PNG)

    fig = Figure(figsize=(13, 4))
    axes = fig.subplots(1, 4)
    styles = {"p50": "-", "p90": "--", "p99": ":"}
    for ax, (key, name) in zip(axes, [("ttft_ms", "TTFT"), ("tpot_ms", "TPOT"), ("itl_ms", "ITL"), ("e2e_ms", "end-to-end")]):
        for i, (label, rows) in enumerate(groups.items()):
            xs = [r["concurrency"] for r in rows]
            for p, style in styles.items():
                ax.plot(xs, [r[key][p] if r[key][p] is not None else float("nan") for r in rows], linestyle=style,
                        marker="o", color=f"C{i}", label=f"{label} {p}")
        ax.set_title(f"{name} (ms)")
        _concurrency_axis(ax, levels)
    axes[0].legend(fontsize=6)
    fig.suptitle(title, fontsize=9)
    _save(fig, out_dir / LATENCY_PNG)
    return dict(CHART_FILES)
