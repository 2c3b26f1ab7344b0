"""xLLM's command-line flags per version, as data (reference/xllm.md §1, §3, §4).

The flag tables in ``xllm_versions/`` are every gflags ``DEFINE_<type>(name, default, …)`` of
one xLLM source revision, extracted from the engine's C++ sources (copies of
``shared/reference/xllm-flags``; a test keeps them equal). They are the only source of which
flags a version accepts: xLLM parses its command line with gflags, where an unknown ``--flag``
aborts the process. The generator checks every flag and value it emits against the version's
table, and the CPU engine accepts exactly that table.

Behaviour that differs between versions is read from the tables where it can be: how a rank is
pinned to its device (``--devices`` / ``--device_id`` / neither), whether ``--draft_devices``
must be passed (its default is ``npu:0`` before v0.10). Parser names and what ``auto`` maps to
are not flags, so they are kept per release line below, with their sources.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from ascend.errors import ServeError

TABLES = Path(__file__).with_name("xllm_versions")

# serve.version -> (flag table, release line of the parser tables). A line name ("0.10") means
# the first release of that line, whose flags every later release of the line also has.
VERSIONS: dict[str, tuple[str, str]] = {
    "0.9": ("v0.9.0", "0.9"),
    "0.9.0": ("v0.9.0", "0.9"),
    "0.9.1": ("v0.9.1", "0.9"),
    "0.10": ("v0.10.0", "0.10"),
    "0.10.0": ("v0.10.0", "0.10"),
    "0.10.1": ("v0.10.1", "0.10"),
    "jd-main": ("jd-opensource-main-87e8d6ed", "jd-main"),
    "0.11": ("xLLM-AI-main-3906f5a9", "0.11"),
    "main": ("xLLM-AI-main-3906f5a9", "0.11"),
}

RELEASES = ("0.9.0", "0.9.1", "0.10.0", "0.10.1", "jd-main", "main")  # one name per table

# Parser names xLLM resolves at startup; an unknown name is LOG(FATAL) (reference/xllm.md §4).
TOOL_CALL_PARSERS = frozenset(
    {"qwen25", "qwen2", "qwen3", "qwen35", "qwen3_coder", "kimi_k2", "deepseekv3", "deepseekv32",
     "deepseekv4", "glm45", "glm47", "glm5", "auto"}
)
REASONING_PARSERS = frozenset(
    {"deepseek-r1", "deepseek-v3", "glm45", "glm47", "glm5", "deepseek-v4", "kimi", "kimi_k25",
     "qwen3", "qwen35", "qwen3-thinking", "qwen35-thinking", "step3", "auto"}
)
# What `auto` resolves to, per release line, keyed by config.json model_type (§4). A model_type
# missing here makes `auto` fatal at startup. v0.10.x and xLLM-AI main map GLM-5 (glm_moe_dsa)
# to glm5; v0.9.x and jd-opensource main do not.
_TOOL_AUTO_BASE = {"deepseek_v3": "deepseekv3", "deepseek_v32": "deepseekv32", "kimi_k2": "kimi_k2"}
_TOOL_AUTO_GLM5 = {**_TOOL_AUTO_BASE, "glm_moe_dsa": "glm5", "glm_moe_dsa_mtp": "glm5"}
TOOL_CALL_AUTO: dict[str, dict[str, str]] = {
    "0.9": _TOOL_AUTO_BASE, "0.10": _TOOL_AUTO_GLM5, "jd-main": _TOOL_AUTO_BASE, "0.11": _TOOL_AUTO_GLM5,
}
REASONING_AUTO: dict[str, dict[str, str]] = {
    line: {"glm4_moe": "glm45", "deepseek_v32": "deepseekv32"} for line in TOOL_CALL_AUTO
}

# ``ascend-xllm-cpu`` accepts exactly the flags of the version named here (set per rank by the generator).
CPU_ENGINE_VERSION_ENV = "ASCEND_XLLM_VERSION"
# ... and enforces serve.max_model_len (xLLM has no flag for it; it reads the model's config).
CPU_ENGINE_MAX_MODEL_LEN_ENV = "ASCEND_XLLM_CPU_MAX_MODEL_LEN"

# Readiness line rank 0 prints once HTTP is up (§5); matched case-insensitively.
READY_LINE = "Brpc Server started on port"

_INT_RANGES = {"int32": (-2**31, 2**31 - 1), "int64": (-2**63, 2**63 - 1), "uint32": (0, 2**32 - 1),
               "uint64": (0, 2**64 - 1)}
_TRUE, _FALSE = {"true", "t", "yes", "y", "1"}, {"false", "f", "no", "n", "0"}  # gflags' spellings


@dataclass(frozen=True)
class Flag:
    """One gflags flag: ``type`` as in ``DEFINE_<type>`` (bool, int32, int64, uint32, uint64,
    double, string); ``default`` as written in the source."""

    name: str
    type: str
    default: str

    def parse(self, raw: str) -> bool | int | float | str:
        """The value of ``--name=raw`` as gflags reads it; ValueError with gflags' wording if illegal."""
        illegal = ValueError(f"illegal value '{raw}' specified for {self.type} flag '{self.name}'")
        if self.type == "bool":
            if raw.lower() in _TRUE | _FALSE:
                return raw.lower() in _TRUE
            raise illegal
        if self.type in _INT_RANGES:
            lo, hi = _INT_RANGES[self.type]
            if not re.fullmatch(r"[+-]?\d+", raw.strip()) or not lo <= int(raw) <= hi:
                raise illegal
            return int(raw)
        if self.type == "double":
            try:
                return float(raw)
            except ValueError:
                raise illegal from None
        return raw

    @property
    def default_value(self) -> bool | int | float | str:
        """The default as a value (source expressions such as ``128 * 1024`` evaluated; a named
        C++ constant stays its name)."""
        text = self.default.strip()
        if self.type == "string":
            return text[1:-1] if len(text) >= 2 and text[0] == text[-1] == '"' else text
        if "numeric_limits" in text:
            return _INT_RANGES.get(self.type, (0, 0))[1] if "max" in text else _INT_RANGES.get(self.type, (0, 0))[0]
        if self.type in _INT_RANGES and re.fullmatch(r"[\d\s*+]+", text):
            value = 1
            for factor in text.split("*"):
                value *= sum(int(term) for term in factor.split("+"))
            return value
        try:
            return self.parse(text.rstrip("fF") if self.type == "double" else text)
        except ValueError:  # a C++ constant (kEnableGraphVmmPoolDefault): not known here
            return text


@dataclass(frozen=True)
class XllmVersion:
    """One supported ``serve.version``: its flag table and what follows from it."""

    name: str  # serve.version as given
    table: str  # the flag table's revision, e.g. v0.10.1
    line: str  # release line of the parser tables
    flags: dict[str, Flag]

    def has(self, name: str) -> bool:
        return name in self.flags

    @property
    def device_selection(self) -> str:
        """``devices`` (--devices=npu:N), ``device_id`` (--device_id=N) or ``visible`` (neither:
        device = node_rank % visible devices, so ASCEND_RT_VISIBLE_DEVICES pins it)."""
        if self.has("device_id"):
            return "device_id"
        return "devices" if self.has("devices") else "visible"

    @property
    def needs_draft_devices(self) -> bool:
        """Before v0.10 ``--draft_devices`` defaults to npu:0, which would put every draft there."""
        flag = self.flags.get("draft_devices")
        return flag is not None and flag.default_value != ""

    def check(self, name: str, value: object, *, where: str) -> None:
        """ServeError unless ``--name=value`` exists in this version with a legal value."""
        flag = self.flags.get(name)
        if flag is None:
            having = [v for v in RELEASES if name in _read_table(VERSIONS[v][0])]
            raise ServeError(
                f"{where}: --{name} does not exist in xLLM {self.name} ({self.table}; unknown flags abort xLLM)",
                fix=(f"it exists in xLLM {', '.join(having)} — use the spelling of this version or set serve.version"
                     if having else "remove it (see docs/serving.md for each version's flags)"),
            )
        raw = ("true" if value else "false") if isinstance(value, bool) else str(value)
        try:
            flag.parse(raw)
        except ValueError as err:
            raise ServeError(f"{where}: {err} (xLLM {self.name})", fix=f"give --{name} a {flag.type} value") from None


@cache
def _read_table(table: str) -> dict[str, Flag]:
    flags = {}
    for line in (TABLES / f"{table}.tsv").read_text().splitlines():
        name, type_, default, _file = line.split("\t")
        flags[name] = Flag(name, type_, default)
    return flags


@cache
def xllm_version(version: object) -> XllmVersion:
    """The supported xLLM version ``serve.version`` names (``"0.10"``, ``"0.10.1"``, ``"main"``,
    ...), or a ServeError listing them. A YAML float (``0.1`` for ``0.10``) is caught here too."""
    name = str(version).strip().lstrip("v")
    if name not in VERSIONS:
        raise ServeError(
            f"serve.version {version!r} is not a supported xLLM version",
            fix=f"use one of {', '.join(VERSIONS)} (quote it in YAML: version: \"0.10\")",
        )
    table, line = VERSIONS[name]
    return XllmVersion(name, table, line, _read_table(table))


def resolve_parser(kind: str, name: str | None, model_type: str, version: XllmVersion) -> str | None:
    """Check a parser name the way xLLM will at startup; refuse names that would abort it.

    ``kind`` is ``"tool_call"`` or ``"reasoning"``. Returns the name to pass (``None`` = no flag).
    """
    if not name:
        return None
    known = TOOL_CALL_PARSERS if kind == "tool_call" else REASONING_PARSERS
    key = f"serve.{kind}_parser"
    if name not in known:
        raise ServeError(
            f"{key}: xLLM has no {kind.replace('_', ' ')} parser {name!r} (it would abort at startup)",
            fix=f"use one of {', '.join(sorted(known - {'auto'}))}",
        )
    if name == "auto":
        table = (TOOL_CALL_AUTO if kind == "tool_call" else REASONING_AUTO)[version.line]
        target = table.get(model_type)
        if target is None or target not in known:
            raise ServeError(
                f"{key}: 'auto' is fatal on xLLM {version.name} for model_type {model_type!r}",
                why="xLLM maps auto only for "
                + (", ".join(f"{k}->{v}" for k, v in sorted(table.items())) or "nothing"),
                fix=f"name the parser explicitly, e.g. --set {key}=<name>",
            )
    return name
