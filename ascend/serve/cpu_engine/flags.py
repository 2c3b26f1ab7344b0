"""gflags-style command line of the CPU engine: exactly the flags of the xLLM version it stands in
for, nothing else, so an e2e run with the CPU engine proves the argv of that version.

The version comes from ``ASCEND_XLLM_VERSION`` (``ascend serve`` sets it from ``serve.version``;
default: the schema's). Accepted forms, as gflags: ``--name=value``, ``--name value``,
``-name=value``; booleans also ``--name`` / ``--noname``. An unknown flag is an error, as it
aborts xLLM.
"""

from __future__ import annotations

import os

from ascend.errors import ServeError
from ascend.recipe.schema import ServeSection
from ascend.serve.xllm_flags import CPU_ENGINE_VERSION_ENV as VERSION_ENV
from ascend.serve.xllm_flags import Flag, XllmVersion, xllm_version


class FlagError(ValueError):
    pass


def _convert(flag: Flag, raw: str):
    try:
        return flag.parse(raw)
    except ValueError as err:
        raise FlagError(str(err)) from None


def stood_in_version() -> XllmVersion:
    """The xLLM version this engine imitates (``ASCEND_XLLM_VERSION``)."""
    try:
        return xllm_version(os.environ.get(VERSION_ENV) or ServeSection().version)
    except ServeError as err:
        raise FlagError(f"{VERSION_ENV}: {err.line()}") from None


def parse_flags(argv: list[str], version: XllmVersion | None = None) -> dict:
    """``{flag: value}`` for every flag of ``version`` (defaults filled in); raises FlagError."""
    version = version or stood_in_version()
    known = version.flags
    values = {name: flag.default_value for name, flag in known.items()}
    values["devices"] = ""  # the CPU engine has no NPUs; record only what was passed
    values["_given"] = set()
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("-") or arg in ("-", "--"):
            raise FlagError(f"unexpected positional argument '{arg}' (flags are --name=value)")
        body = arg.lstrip("-")
        name, eq, raw = body.partition("=")
        flag = known.get(name)
        if flag is None and not eq and name.startswith("no") and known.get(name[2:]) and known[name[2:]].type == "bool":
            values[name[2:]] = False
            values["_given"].add(name[2:])
            i += 1
            continue
        if flag is None:
            raise FlagError(f"unknown command line flag '{name}' (xLLM {version.name})")
        if not eq:
            if flag.type == "bool":
                raw = "true"
            else:
                if i + 1 >= len(argv):
                    raise FlagError(f"flag '--{name}' is missing its argument")
                i += 1
                raw = argv[i]
        values[name] = _convert(flag, raw)
        values["_given"].add(name)
        i += 1
    if values.get("config_json_file"):
        _apply_config_json(values, known)
    if not values["model"]:
        raise FlagError("--model flag is required")
    return values


# xLLM reads these only from the command line (config_utils.cpp); a JSON file cannot change them.
RANK_SPECIFIC = {"node_rank", "device_id", "devices", "port"}


def _apply_config_json(values: dict, known: dict[str, Flag]) -> None:
    """``--config_json_file``: its keys (flag names) override the command line, as in xLLM."""
    import json

    path = values["config_json_file"]
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise FlagError(f"cannot read --config_json_file {path}: {err}") from None
    for name, value in data.items():
        if name in RANK_SPECIFIC:
            continue
        flag = known.get(name)
        if flag is None:
            raise FlagError(f"unknown flag '{name}' in {path}")
        raw = str(value).lower() if isinstance(value, bool) else str(value)
        values[name] = _convert(flag, raw)
