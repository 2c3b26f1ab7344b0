"""`ascend serve`: print or launch every rank of a recipe's xLLM (or CPU engine) deployment."""

from __future__ import annotations

import sys
from typing import Optional

import typer

from ascend.cli.common import json_option, print_json, set_option


def _this_node(hosts: list[str]) -> int | None:
    """Index of this machine in ``hosts`` (by its addresses), or None."""
    import socket

    mine = {"127.0.0.1", socket.gethostname()}
    try:
        mine.update(info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None))
    except OSError:
        pass
    matches = [i for i, h in enumerate(hosts) if h in mine]
    return matches[0] if len(matches) == 1 else None


def serve(
    recipe: str = typer.Argument(..., help="Recipe file or built-in name (see `ascend recipes`)."),
    overrides: list[str] = set_option(),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print every rank's command, environment and the launch scripts; start nothing."),
    as_json: bool = json_option("With --dry-run: print {ranks, scripts, rank_table} as JSON."),
    node: Optional[int] = typer.Option(None, "--node", help="Which node this machine is (index into hardware.hosts); default: detected."),
    log_dir: str = typer.Option("logs", "--log-dir", help="One log file per rank goes here."),
    device_ips_from: Optional[str] = typer.Option(
        None, "--device-ips-from", metavar="DIR",
        help="Folder with <host>/hccn_<dev>.txt (output of `hccn_tool -i <dev> -ip -g`) and, on A3, "
        "<host>/spod_<dev>.txt (`npu-smi info -t spod-info`), to generate the rank table."),
    emit: Optional[str] = typer.Option(
        None, "--emit", metavar="FORM",
        help="Print instead of starting: `script` (this --node's launch script), `slurm` (an sbatch script, one "
        "task per node) or `kubernetes` (LeaderWorkerSet, Service; docs/slurm.md, docs/kubernetes.md)."),
    out: Optional[str] = typer.Option(None, "--out", metavar="FILE", help="With --emit: write to FILE instead of stdout."),
) -> None:
    """Launch (or print) one engine process per device, exactly as xLLM needs it.

    Generates every rank's argv and environment with the flags of xLLM serve.version, the HCCL
    rank table for multi-node deployments, and one launch script per node. Without --dry-run it
    starts this node's ranks, waits for readiness (the "Brpc Server started" log line and
    GET /health 200), and keeps them running until Ctrl-C; if any rank dies all are stopped and
    the rank, its exit code and the end of its log are reported.

    Examples:

    \b
      ascend serve glm5/a3-w8a8 --dry-run                 # every rank's command + env
      ascend serve glm5/a3x2-bf16 --dry-run --json > deploy.json
      ascend serve glm5/a3-w8a8 --set serve.version='"0.11"' --dry-run  # quote: YAML reads 0.11 as a number
      ascend serve tiny/glm5-cpu                          # CPU engine, 2 ranks, Ctrl-C to stop
      ascend serve glm5/a3x2-bf16 --node 1 --device-ips-from hccn/
      ascend serve glm5/a3x2-bf16 --emit slurm --out serve.sbatch   # then: sbatch serve.sbatch
    """
    from ascend.recipe import load_recipe
    from ascend.serve.ranktable import device_info_from_dir
    from ascend.serve.xllm import build_deployment

    rec = load_recipe(recipe, overrides)
    ips = sdids = pods = None
    if device_ips_from:
        ips, sdids, pods = device_info_from_dir(device_ips_from, list(rec.hardware.hosts), rec.hardware.devices_per_node)
    dep = build_deployment(rec, device_ips=ips, super_device_ids=sdids, super_pod_ids=pods)
    for warning in dep.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if emit is not None:
        from ascend.cluster.emit import emit_serve

        emit_serve(rec, dep, emit, node=node, out=out, device_ips_from=device_ips_from)
        return
    if out is not None:
        from ascend.errors import ServeError

        raise ServeError("--out only applies with --emit", fix="add --emit script|slurm|kubernetes")
    if dry_run:
        if as_json:
            print_json(dep.to_json())
            return
        for n, script in dep.scripts.items():
            host = dep.hosts[int(n)]
            print(f"# ===== node {n} ({host}): ranks {', '.join(str(r.rank) for r in dep.node_ranks(int(n)))} =====")
            print(script)
        return
    if as_json:
        from ascend.errors import ServeError

        raise ServeError("--json only applies with --dry-run", fix="add --dry-run")
    from ascend.paths import writable_dir

    writable_dir(log_dir, "--log-dir")
    _launch(rec, dep, node, log_dir, recipe)


def _launch(rec, dep, node: int | None, log_dir: str, ref: str) -> None:
    import signal

    from ascend.errors import ServeError
    from ascend.progress import heartbeat
    from ascend.serve.launch import RankFailed, Service, readiness_timeout

    if node is None:
        node = 0 if len(dep.hosts) == 1 else _this_node(dep.hosts)
        if node is None:
            raise ServeError("cannot tell which node of hardware.hosts this machine is", fix="pass --node N")
    from ascend.serve.preflight import preflight

    preflight(rec, dep.model_dir, ref=ref, node=node)
    stop = {"requested": False}

    def _request_stop(signum, _frame):
        stop["requested"] = True

    service = Service(dep, node=node, log_dir=log_dir,
                      timeout_s=readiness_timeout(dep.model_dir, configured=rec.serve.startup_timeout_s))
    old = {s: signal.signal(s, _request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        service.start()
        ranks = ", ".join(f"{r} (pid {p.pid})" for r, p in service.procs.items())
        print(f"started ranks {ranks} on node {node}; logs in {log_dir}/", file=sys.stderr)
        with heartbeat("serve: waiting for readiness", detail=lambda: _last_line(service.logs.get(0))):
            ready = service.wait_ready(lambda: stop["requested"])
        if ready:
            if service.serves_http:
                print(f"ready: {service.base_url}/v1  model={dep.served_model}  (Ctrl-C stops all ranks)", file=sys.stderr)
            else:
                print(f"node {node}'s ranks are running; rank 0 serves {dep.base_url()}/v1 (Ctrl-C stops them)",
                      file=sys.stderr)
            service.wait(lambda: stop["requested"])
        codes = service.stop()
        print(f"stopped: exit codes {codes}", file=sys.stderr)
    except RankFailed as err:
        print(f"rank {err.rank} exited with code {err.code}; last lines of {err.log}:", file=sys.stderr)
        for line in err.tail:
            print(f"  | {line}", file=sys.stderr)
        raise
    finally:
        service.stop()
        for s, handler in old.items():
            signal.signal(s, handler)


def _last_line(log) -> str:
    """Rank 0's latest log line (what a readiness wait is waiting on), shortened."""
    from ascend.serve.launch import log_tail

    line = next((s for s in reversed(log_tail(log, 5)) if s.strip()), "") if log else ""
    return f"rank 0: {line[-120:]}" if line else ""


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
