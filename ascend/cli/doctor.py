"""`ascend doctor`: inspect this host (driver, CANN, torch/torch_npu, NPUs, HCCL, network, disk, RAM)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from ascend.cli.common import json_option, print_json, set_option

_MARK = {"ok": "ok   ", "info": "info ", "warn": "WARN ", "error": "ERROR"}


def register(app: typer.Typer) -> None:
    @app.command("doctor")
    def doctor_command(
        recipe: Optional[str] = typer.Argument(None, metavar="[RECIPE]", help="Also check what this recipe needs: chip, devices, xLLM, ports, disk, RAM."),
        overrides: list[str] = set_option(),
        as_json: bool = json_option(),
        root: Path = typer.Option(Path("/"), "--root", help="Read the Ascend install under this root (e.g. a host mount)."),
        replay: Optional[Path] = typer.Option(None, "--replay", help="Replay a recorded host directory instead of this machine (see docs)."),
        timeout: float = typer.Option(20.0, "--timeout", min=1, help="Seconds per external command."),
    ) -> None:
        """Check this host before a launch; every finding has a severity and a fix.

        Reads the NPU driver and firmware versions, the CANN toolkit, `npu-smi info` (chip:
        910B vs A3 dies, health, memory, processes holding NPUs), torch / torch_npu and their
        pairing (probed in a child process), the xLLM binary, HCCL environment, `hccn_tool`
        link/IP, whether the hostname resolves to a routable address; with a RECIPE also the
        chip and device count, free ports, free disk for convert.output and RAM for
        convert.workers. Exit 3 when any finding is an error. On a host without NPUs it says so
        and checks the rest.

        Examples:

        \b
          ascend doctor                          # this host
          ascend doctor glm5/a3-w8a8             # this host, for this recipe
          ascend doctor glm5/a3-w8a8 --set convert.workers=4 --json
        """
        from ascend.doctor import LocalHost, ReplayHost, Target, run_doctor, target_from_recipe

        target = Target()
        if recipe is not None:
            from ascend.recipe import load_recipe

            target = target_from_recipe(load_recipe(recipe, list(overrides)), recipe)
        host = ReplayHost(replay, timeout_s=timeout) if replay else LocalHost(root, timeout_s=timeout)
        report = run_doctor(host, target)
        if as_json:
            print_json(report.to_dict())
        else:
            for f in report.findings:
                print(f"{_MARK[f.severity]} {f.check:<15} {f.message}", file=sys.stdout)
                if f.fix and f.severity in ("warn", "error"):
                    print(f"{'':6}{'':15} fix: {f.fix}", file=sys.stdout)
            counts = report.to_dict()["counts"]
            print(f"\n{counts['error']} errors, {counts['warn']} warnings", file=sys.stdout)
        if report.errors:
            from ascend.errors import CheckFailed

            raise CheckFailed(
                f"doctor found {len(report.errors)} error(s): " + "; ".join(f.check for f in report.errors),
                fix="apply the fixes listed above",
            )
