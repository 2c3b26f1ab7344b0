"""What `ascend serve` and `ascend run` check before starting a single rank: a checkpoint to
load, and free ports. Either problem otherwise shows up minutes later as a rank that died (a
port taken shows as rank 0 failing to bind after loading, or as the other ranks exiting while
the cause sits in rank-0.log).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ascend.errors import ServeError


def preflight(recipe: Any, model_dir: str, *, ref: str, node: int = 0) -> None:
    """Raise ServeError (exit 2) naming what is missing or which port is taken (and by whom)."""
    require_checkpoint(recipe, model_dir, ref=ref)
    if node == 0:  # rank 0 (HTTP and the rendezvous master) runs on node 0
        require_free_ports(recipe)


def require_checkpoint(recipe: Any, model_dir: str, *, ref: str) -> None:
    """The served directory must hold a model (config.json; a conversion writes it last)."""
    if (Path(model_dir) / "config.json").is_file():
        return
    if recipe.convert.output:
        state = "holds an unfinished conversion" if Path(model_dir).is_dir() else "does not exist"
        raise ServeError(f"no converted checkpoint to serve: {model_dir} {state}",
                         fix=f"run `ascend convert {ref}` first (it resumes), or `ascend run {ref}`")
    raise ServeError(f"no checkpoint to serve: {model_dir} has no config.json",
                     fix=f"run `ascend fetch {ref}` first, or point model.path at the checkpoint")


def require_free_ports(recipe: Any) -> None:
    """The ports `ascend doctor` checks for this recipe must be free."""
    from ascend.doctor import LocalHost, busy_ports, recipe_ports

    busy = busy_ports(LocalHost(), recipe_ports(recipe))
    if busy:
        raise ServeError(f"{'ports' if len(busy) > 1 else 'port'} {', '.join(busy)} already in use on this machine",
                         why=f"serve.port {recipe.serve.port} (+1 per local rank) and serve.master_port "
                         f"{recipe.serve.master_port} must be free",
                         fix="stop that process (an earlier `ascend serve`?), or choose other ports with "
                         "--set serve.port=N --set serve.master_port=M")
