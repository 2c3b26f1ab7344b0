"""Options and output helpers shared by the subcommands (one definition each)."""

from __future__ import annotations

import json
import sys
from typing import Any

import typer

SET_HELP = "Override a recipe value, e.g. --set serve.max_model_len=65536 (repeatable; YAML typing)."


def set_option() -> Any:
    """The repeatable ``--set K=V`` option every recipe-taking command accepts."""
    return typer.Option([], "--set", metavar="KEY=VALUE", help=SET_HELP)


def json_option(help: str = "Print machine-readable JSON on stdout.") -> Any:
    return typer.Option(False, "--json", help=help)


def print_json(obj: Any) -> None:
    """Write ``obj`` as indented JSON to stdout (the only thing on stdout in --json mode)."""
    json.dump(obj, sys.stdout, indent=2, sort_keys=False, default=str)
    sys.stdout.write("\n")


def interactive() -> bool:
    """Colour and per-step detail lines only on a terminal (progress of long stages shows
    everywhere: ``ascend.progress``)."""
    return sys.stderr.isatty()
