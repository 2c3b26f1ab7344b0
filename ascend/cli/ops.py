"""`ascend ops check`: operator parity between a backend and the plain per-expert reference."""

from __future__ import annotations

import typer

from ascend.cli.common import json_option, print_json

CHECK_HELP = """\
Run every MoE operator (gating_topk, init_routing, grouped_matmul, token_unpermute, dynamic_quant,
expert_mlp, fused_moe) on seeded random inputs with the chosen backend and compare it with the
plain per-expert loop reference. Prints the max relative error per op output; exits 3 if any is
over tolerance, 2 if the backend cannot be loaded (e.g. no torch_npu / no NPU).

Examples:

\b
  ascend ops check                          # cpu backend, fp32 and bf16
  ascend ops check --backend npu            # on an Ascend host: are the NPU kernels right?
  ascend ops check --backend npu --json     # machine-readable
  ascend ops check --dtype bfloat16 --seed 3
"""


def register(app: typer.Typer) -> None:
    ops_app = typer.Typer(help="MoE operator tools (parity checks).", no_args_is_help=True, rich_markup_mode=None)

    @ops_app.command("check", help=CHECK_HELP)
    def check(
        backend: str = typer.Option("cpu", "--backend", help="Operator backend to check: cpu or npu."),
        dtype: list[str] = typer.Option(["float32", "bfloat16"], "--dtype", help="Dtypes to test (repeatable)."),
        seed: int = typer.Option(0, "--seed", help="Seed of the random inputs."),
        as_json: bool = json_option(),
    ) -> None:
        import torch

        from ascend.errors import AscendError, CheckFailed
        from ascend.ops.moe.check import FLOAT_TOLERANCE, run_check

        if backend not in ("cpu", "npu"):
            raise AscendError(f"unknown backend {backend!r} for --backend", fix="use --backend cpu or --backend npu")
        dtypes = []
        for name in dtype:
            dt = getattr(torch, name, None)
            if dt not in FLOAT_TOLERANCE:
                raise AscendError(f"unsupported --dtype {name!r}", fix="use float32, bfloat16 or float16")
            dtypes.append(dt)
        results = run_check(backend, seed=seed, dtypes=tuple(dtypes))
        failed = [r for r in results if not r.ok]
        if as_json:
            print_json({"backend": backend, "seed": seed, "ok": not failed, "results": [r.as_dict() for r in results]})
        else:
            typer.echo(f"{'op':16} {'dtype':9} {'output':34} {'max error':>10} {'tolerance':>10}  result")
            for r in results:
                typer.echo(f"{r.op:16} {r.dtype:9} {r.output:34} {r.max_error:10.3g} {r.tolerance:10.3g}  "
                           f"{'ok' if r.ok else 'FAIL'}")
        if failed:
            worst = max(failed, key=lambda r: r.max_error / (r.tolerance or 1e-30))
            raise CheckFailed(f"{len(failed)} of {len(results)} operator outputs of backend {backend} are over tolerance",
                              why=f"worst: {worst.op} {worst.output} ({worst.dtype}) error {worst.max_error:.3g} > {worst.tolerance:.3g}",
                              fix="compare with the semantics in docs/operators.md; rerun with --json for all values")

    app.add_typer(ops_app, name="ops")
