"""Human-readable output of a :class:`Plan` (rich tables)."""

from __future__ import annotations

from typing import Any

from ascend.hardware import GiB
from ascend.plan.planner import Plan, RankLayout

MAX_LAYOUT_ROWS = 16


MiB = 1024**2


def _span(r: tuple[int, int]) -> str:
    return f"{r[0]}–{r[1] - 1}" if r[1] - r[0] > 1 else (str(r[0]) if r[1] > r[0] else "-")


def _ranges(ranks: list[int]) -> str:
    out, start = [], ranks[0]
    for a, b in zip(ranks, ranks[1:] + [None]):
        if b != a + 1:
            out.append(f"{start}–{a}" if a > start else str(a))
            start = b
    return ",".join(out)


def render_plan(plan: Plan, console: Any) -> None:
    """Print the layout table, the memory table per device class and the verdict."""
    from rich.table import Table

    i, serve, spec = plan.settings.layout, plan.settings.serve, plan.settings.speculative_tokens
    console.print(
        f"[bold]{plan.model}[/bold] on {i.nodes} × {plan.chip.name} node(s), {i.world} ranks "
        f"({plan.chip.memory_gib:.0f} GiB each): dp {i.dp} × attention TP {i.attn_tp}, "
        f"EP {i.ep} × MoE TP {i.moe_tp}"
        + (f", MTP {spec} speculative token(s)" if spec else "")
    )
    if plan.hccl.communicators:
        b = plan.hccl_buffsize
        value = f"HCCL_BUFFSIZE={b.mb}" if b.mb is not None else "HCCL_BUFFSIZE unset (engine defaults)"
        console.print(f"{value} ({b.source}; MoE dispatch needs ~{b.need_mb} MB) on "
                      + ", ".join(f"{c} {plan.hccl.buffsize_mb[c]} MB" for c in plan.hccl.communicators))

    layout = Table(title="Parallel layout", show_lines=False)
    for col in ("rank", "node", "device", "dp", "attn tp", "heads", "ep", "experts", "moe tp", "vocab"):
        layout.add_column(col, justify="right")
    rows: list[RankLayout] = plan.layout
    shown = rows if len(rows) <= MAX_LAYOUT_ROWS else rows[: MAX_LAYOUT_ROWS // 2] + rows[-MAX_LAYOUT_ROWS // 2:]
    for n, r in enumerate(shown):
        if len(rows) > MAX_LAYOUT_ROWS and n == MAX_LAYOUT_ROWS // 2:
            layout.add_row("…", *[""] * 9)
        layout.add_row(str(r.rank), str(r.node), str(r.local_device), str(r.dp_rank), str(r.attn_tp_rank),
                       _span(r.heads), str(r.ep_rank), _span(r.experts), str(r.moe_tp_rank), _span(r.vocab))
    console.print(layout)

    # tiny CPU models weigh kilobytes: switch the whole table to MiB so the numbers stay readable
    unit, unit_name = (GiB, "GiB") if max(d.weights_total for d in plan.devices) >= GiB else (MiB, "MiB")

    def _gib(n: int) -> str:
        return f"{n / unit:,.2f}"

    mem = Table(title=f"Memory per device ({unit_name})")
    mem.add_column("")
    for d in plan.devices:
        mem.add_column(f"ranks {_ranges(d.ranks)}", justify="right")
    rows_order = sorted({k for d in plan.devices for k in d.weights}, key=lambda k: -plan.devices[0].weights.get(k, 0))
    for key in rows_order:
        mem.add_row(f"weights: {key}", *[_gib(d.weights.get(key, 0)) for d in plan.devices])
    mem.add_row("weights total", *[_gib(d.weights_total) for d in plan.devices], style="bold")
    mem.add_row(f"workspace ({serve.max_tokens_per_batch} tokens/step)", *[_gib(d.workspace) for d in plan.devices])
    comms = ", ".join(plan.hccl.communicators) or "none"
    mem.add_row(f"HCCL buffers ({comms})", *[_gib(d.hccl) for d in plan.devices])
    mem.add_row("engine reserve", *[_gib(d.reserve) for d in plan.devices])
    mem.add_row("KV cache", *[_gib(d.kv_bytes) for d in plan.devices])
    mem.add_row(f"budget ({plan.chip.memory_gib:.0f} × {serve.memory_utilization})", *[_gib(d.budget) for d in plan.devices],
                style="bold")
    mem.add_row("KV bytes / token", *[f"{d.kv_per_token:,}" for d in plan.devices])
    mem.add_row("KV tokens", *[f"{d.kv_tokens:,}" for d in plan.devices])
    console.print(mem)

    if plan.fits:
        console.print(
            f"[green]fits[/green]: {plan.kv_tokens:,} KV-cache tokens per DP group; "
            f"{plan.concurrent_max_len_seqs} concurrent sequence(s) of max_model_len {serve.max_model_len:,} "
            f"(max_seqs {serve.max_seqs})"
        )
    else:
        console.print(f"[red]does not fit[/red] (max_model_len {serve.max_model_len:,}, {plan.kv_tokens:,} KV tokens)")
        for s in plan.suggestions:
            console.print(f"  try: {s}")
    for w in plan.warnings:
        console.print(f"[yellow]warning[/yellow]: {w}")
