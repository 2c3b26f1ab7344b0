"""gflags-style command line of the CPU engine: exactly xLLM's flags (every dialect), nothing else.

Accepted forms, as gflags: ``--name=value``, ``--name value``, ``-name=value``; booleans also
``--name`` / ``--noname``. An unknown flag is an error, as it aborts xLLM.
"""

from __future__ import annotations

from ascend.serve.xllm_flags import FLAGS


class FlagError(ValueError):
    pass


_TRUE = {"true", "1", "yes", "t", "y"}
_FALSE = {"false", "0", "no", "f", "n"}


def _convert(name: str, kind: str, raw: str):
    try:
        if kind == "bool":
            low = raw.lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise ValueError(raw)
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        return raw
    except ValueError:
        raise FlagError(f"illegal value '{raw}' specified for {kind} flag '{name}'") from None


def parse_flags(argv: list[str]) -> dict:
    """``{flag: value}`` for every known flag (defaults filled in); raises FlagError."""
    values = {name: flag.default for name, flag in FLAGS.items()}
    values["devices"] = ""  # the CPU engine has no NPUs; record only what was passed
    values["_given"] = set()
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("-") or arg in ("-", "--"):
            raise FlagError(f"unexpected positional argument '{arg}' (flags are --name=value)")
        body = arg.lstrip("-")
        name, eq, raw = body.partition("=")
        flag = FLAGS.get(name)
        if flag is None and not eq and name.startswith("no") and FLAGS.get(name[2:]) and FLAGS[name[2:]].kind == "bool":
            values[name[2:]] = False
            values["_given"].add(name[2:])
            i += 1
            continue
        if flag is None:
            raise FlagError(f"unknown command line flag '{name}'")
        if not eq:
            if flag.kind == "bool":
                raw = "true"
            else:
                if i + 1 >= len(argv):
                    raise FlagError(f"flag '--{name}' is missing its argument")
                i += 1
                raw = argv[i]
        values[name] = _convert(name, flag.kind, raw)
        values["_given"].add(name)
        i += 1
    if values["config_json_file"]:
        _apply_config_json(values)
    if not values["model"]:
        raise FlagError("--model flag is required")
    return values


# xLLM reads these only from the command line (config_utils.cpp); a JSON file cannot change them.
RANK_SPECIFIC = {"node_rank", "device_id", "devices", "port"}


def _apply_config_json(values: dict) -> None:
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
        flag = FLAGS.get(name)
        if flag is None:
            raise FlagError(f"unknown flag '{name}' in {path}")
        raw = str(value).lower() if isinstance(value, bool) else str(value)
        values[name] = _convert(name, flag.kind, raw)
