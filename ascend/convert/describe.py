"""``ascend convert --dry-run``: the conversion jobs, file by file, in words."""

from __future__ import annotations

from ascend.checkpoint.files import STATE_DIR
from ascend.convert.adapters import layout_of_piece, output_layout, source_format
from ascend.convert.jobs import ConvertJobs, Piece


def describe_jobs(jobs: ConvertJobs, src_dir: str, out_dir: str) -> str:
    """Human-readable per-file jobs (``--dry-run``)."""
    o = jobs.options
    layout, fmt = output_layout(o.layout), source_format(o.source_format)
    lines = [
        f"convert {src_dir} -> {out_dir}",
        f"  layout {o.layout}, precision {o.precision}, mtp {o.mtp}"
        + (f", {o.parallel}" if o.layout == "sharded" else "")
        + (f", {layout.describe(o)}" if layout else "")
        + (f" (from {fmt.title})" if fmt else ""),
    ]
    total = 0
    for rel, f in jobs.all_files():
        ops: dict[str, int] = {}
        for p in f.pieces:
            ops[p.op] = ops.get(p.op, 0) + 1
        total += f.nbytes
        lines.append(f"  {rel}: {len(f.tensors)} tensors, {f.nbytes / 1e9:.3f} GB ({', '.join(f'{k} {v}' for k, v in sorted(ops.items()))})")
        for p in f.pieces[:3]:
            lines.append("      " + describe_piece(p))
        if len(f.pieces) > 3:
            lines.append(f"      ... {len(f.pieces) - 3} more")
    lines.append(f"  total {total / 1e9:.3f} GB in {len(jobs.all_files())} weight files")
    lines += [f"  warning: {w}" for w in jobs.warnings]
    static = sum(p.op == "w8a8_static" for _, f in jobs.all_files() for p in f.pieces)
    if static:
        lines.append(f"  {static} static W8A8 linear(s) (scheme {o.precision.w8a8_scheme}): calibrated into {out_dir}/{STATE_DIR}/calibration first")
    return "\n".join(lines)


def describe_piece(p: Piece) -> str:
    layout = layout_of_piece(p)
    if layout is not None:
        return layout.describe_piece(p)
    window = ""
    if p.rows is not None:
        window += f" rows[{p.rows[0]}:{p.rows[1]}]"
    if p.cols is not None:
        window += f" cols[{p.cols[0]}:{p.cols[1]}]"
    outs = ", ".join(f"{n} {d}{list(s)}" for n, d, s in p.outputs)
    return f"{p.op}: {p.source}{window}{' (+scale)' if p.scale else ''} -> {outs}"


# ---------------------------------------------------------------------------------------------
# state, resume, ownership
