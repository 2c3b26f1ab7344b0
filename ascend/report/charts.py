"""The plan's per-device memory as a stacked bar chart: inline SVG for the HTML report (no
dependency), PNG through matplotlib's Agg canvas for `ascend plan --chart FILE.png`.

Input is ``plan.json`` / ``Plan.as_dict()``: one bar per device class (ranks with the same
budget): weights, KV cache, HCCL buffers, workspace and reserve, against the device capacity.
"""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

PARTS = [  # (label, key in device_classes[i], colour)
    ("weights", "weights_total_bytes", "#4c72b0"),
    ("KV cache", "kv_cache_bytes", "#55a868"),
    ("HCCL", "hccl_bytes", "#c44e52"),
    ("workspace", "workspace_bytes", "#8172b2"),
    ("reserve", "reserve_bytes", "#ccb974"),
]
GIB = 2**30


def memory_bars(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """One bar per device class: ``label``, ``parts`` [(name, bytes, colour)], ``capacity``."""
    bars = []
    for dev in plan.get("device_classes") or []:
        ranks = dev.get("ranks") or []
        label = f"ranks {ranks[0]}-{ranks[-1]}" if len(ranks) > 1 else f"rank {ranks[0] if ranks else '?'}"
        parts = [(name, int(dev.get(key) or 0), colour) for name, key, colour in PARTS]
        bars.append({"label": label, "parts": parts, "capacity": int(dev.get("capacity_bytes") or 0)})
    return bars


def _unit(bars: list[dict[str, Any]]) -> tuple[float, str]:
    top = max([b["capacity"] for b in bars] + [sum(p[1] for p in b["parts"]) for b in bars] + [1])
    return (GIB, "GiB") if top >= GIB else (2**20, "MiB")


def memory_svg(plan: dict[str, Any], width: int = 640) -> str:
    """An SVG element (string) of the stacked bars, with a dashed capacity line per bar."""
    bars = memory_bars(plan)
    if not bars:
        return '<p class="missing">plan.json has no device classes</p>'
    scale, unit = _unit(bars)
    top = max([b["capacity"] for b in bars] + [sum(p[1] for p in b["parts"]) for b in bars]) * 1.08 or 1
    h, left, plot_h = 300, 60, 230
    bar_w = min(90, (width - left - 150) / len(bars) * 0.6)
    step = (width - left - 150) / len(bars)
    y = lambda v: 10 + plot_h * (1 - v / top)  # noqa: E731
    out = [f'<svg class="chart" id="memory-chart" width="{width}" height="{h}" '
           f'viewBox="0 0 {width} {h}" role="img" aria-label="memory per device">']
    for i in range(5):  # axis ticks
        v = top * i / 4
        out.append(f'<line x1="{left}" x2="{width - 150}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#ddd"/>'
                   f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end" font-size="11">{v / scale:.1f}</text>')
    out.append(f'<text x="12" y="{10 + plot_h / 2}" font-size="11" transform="rotate(-90 12 {10 + plot_h / 2})" '
               f'text-anchor="middle">{unit}</text>')
    for i, b in enumerate(bars):
        x = left + step * i + (step - bar_w) / 2
        base = 0
        for name, n, colour in b["parts"]:
            if n <= 0:
                continue
            out.append(f'<rect class="bar" data-part="{escape(name)}" x="{x:.1f}" y="{y(base + n):.1f}" width="{bar_w:.1f}" '
                       f'height="{y(base) - y(base + n):.1f}" fill="{colour}"><title>{escape(name)}: {n / scale:.2f} {unit}</title></rect>')
            base += n
        if b["capacity"]:
            cy = y(b["capacity"])
            out.append(f'<line x1="{x - 8:.1f}" x2="{x + bar_w + 8:.1f}" y1="{cy:.1f}" y2="{cy:.1f}" stroke="#000" '
                       f'stroke-dasharray="4 3"/><text x="{x + bar_w / 2:.1f}" y="{cy - 4:.1f}" font-size="10" '
                       f'text-anchor="middle">capacity {b["capacity"] / scale:.1f}</text>')
        out.append(f'<text x="{x + bar_w / 2:.1f}" y="{10 + plot_h + 16}" font-size="11" text-anchor="middle">{escape(b["label"])}</text>')
    for j, (name, _, colour) in enumerate(PARTS):  # legend
        ly = 20 + j * 18
        out.append(f'<rect x="{width - 130}" y="{ly}" width="12" height="12" fill="{colour}"/>'
                   f'<text x="{width - 112}" y="{ly + 10}" font-size="11">{escape(name)}</text>')
    out.append("</svg>")
    return "".join(out)


def write_memory_png(plan: dict[str, Any], path: str | Path) -> Path:
    """The same chart as a PNG (matplotlib, Agg canvas: no display needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ascend.fileio import atomic_path

    bars = memory_bars(plan)
    scale, unit = _unit(bars)
    fig = Figure(figsize=(max(7, 1.6 * len(bars) + 4), 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    xs = range(len(bars))
    bottoms = [0.0] * len(bars)
    for k, (name, _, colour) in enumerate(PARTS):
        vals = [b["parts"][k][1] / scale for b in bars]
        ax.bar(xs, vals, 0.6, bottom=bottoms, color=colour, label=name)
        bottoms = [a + v for a, v in zip(bottoms, vals)]
    for i, b in enumerate(bars):
        ax.hlines(b["capacity"] / scale, i - 0.4, i + 0.4, colors="black", linestyles="dashed",
                  label="capacity" if i == 0 else None)
    ax.set_xticks(list(xs), [b["label"] for b in bars])
    ax.set_ylabel(unit)
    ax.set_title(f"{plan.get('model', '')} on {plan.get('chip', '')}: memory per device")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path
