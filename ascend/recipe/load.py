"""Load a recipe: YAML with line numbers, `base:` inheritance, `--set` overrides, `${env:NAME}`.

Every problem is collected and reported at once, each on one line that names the file, the line
(where YAML gives it), the dotted key and the fix::

    recipes/glm5/a3-w8a8.yaml:14: parallel.epp: unknown key — did you mean 'ep'?
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Sequence

import yaml
from pydantic import BaseModel, ValidationError

from ascend.errors import RecipeError
from ascend.recipe.registry import resolve_ref
from ascend.recipe.schema import Recipe

Key = tuple[str, ...]
ENV_REF = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}")


class Origins:
    """Where each dotted key's value came from: `file:line` or `--set a.b=c`."""

    def __init__(self) -> None:
        self._where: dict[Key, str] = {}

    def set(self, key: Key, where: str) -> None:
        self._where[key] = where

    def update(self, other: "Origins") -> None:
        self._where.update(other._where)

    def of(self, key: Sequence[Any], default: str) -> str:
        """The origin of ``key`` or of its nearest recorded parent."""
        parts = tuple(str(p) for p in key)
        while parts:
            if parts in self._where:
                return self._where[parts]
            parts = parts[:-1]
        return default


def dotted(key: Sequence[Any]) -> str:
    """``("convert", "precision", "rules", 0, "match")`` -> ``convert.precision.rules[0].match``."""
    out = ""
    for part in key:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


# ----------------------------------------------------------------------------- YAML with lines


def _read_yaml(path: Path, problems: list[str]) -> tuple[dict, Origins]:
    """Parse one YAML file into plain data plus the line of every key."""
    origins = Origins()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        problems.append(f"{path}: cannot read recipe: {err.strerror or err}")
        return {}, origins
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problems.append(f"{where}: not valid YAML: {getattr(err, 'problem', None) or err} — fix the syntax at that line")
        return {}, origins
    if data is None:
        return {}, origins
    if not isinstance(data, dict):
        problems.append(f"{path}:1: a recipe must be a mapping of sections (model, hardware, ...), got {type(data).__name__}")
        return {}, origins
    _record_lines(node, (), path, origins, problems)
    return data, origins


def _record_lines(node: yaml.Node, key: Key, path: Path, origins: Origins, problems: list[str]) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for knode, vnode in node.value:
            name = str(knode.value)
            child = key + (name,)
            where = f"{path}:{knode.start_mark.line + 1}"
            if name in seen:
                problems.append(f"{where}: {dotted(child)}: key appears twice — keep one")
            seen.add(name)
            origins.set(child, where)
            _record_lines(vnode, child, path, origins, problems)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            child = key + (str(i),)
            origins.set(child, f"{path}:{item.start_mark.line + 1}")
            _record_lines(item, child, path, origins, problems)


# ----------------------------------------------------------------------------- base: inheritance


def _merge(base: Any, over: Any) -> Any:
    """Deep-merge mappings (later keys win); any other value is replaced whole."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for k, v in over.items():
            out[k] = _merge(base[k], v) if k in base else v
        return out
    return copy.deepcopy(over)


def _load_with_bases(path: Path, problems: list[str], chain: tuple[Path, ...] = ()) -> tuple[dict, Origins]:
    path = path.resolve()
    if path in chain:
        cycle = " -> ".join(str(p) for p in chain + (path,))
        problems.append(f"{chain[-1]}: base: inheritance cycle {cycle} — remove one of the `base:` links")
        return {}, Origins()
    data, origins = _read_yaml(path, problems)
    base_ref = data.pop("base", None)
    if base_ref is None:
        return data, origins
    where = origins.of(("base",), str(path))
    if not isinstance(base_ref, str):
        problems.append(f"{where}: base: must be a path string, got {type(base_ref).__name__}")
        return data, origins
    base_path = (path.parent / base_ref)
    if not base_path.is_file():
        problems.append(f"{where}: base: file {base_path} does not exist — fix the relative path (it is relative to {path.parent})")
        return data, origins
    base_data, base_origins = _load_with_bases(base_path, problems, chain + (path,))
    base_origins.update(origins)
    return _merge(base_data, data), base_origins


# ----------------------------------------------------------------------------- overrides and env


def _apply_override(data: dict, item: str, origins: Origins, problems: list[str]) -> None:
    where = f"--set {item}"
    key_text, sep, value_text = item.partition("=")
    if not sep or not key_text.strip():
        problems.append(f"{where}: expected KEY=VALUE, e.g. --set serve.max_model_len=65536")
        return
    key = tuple(part.strip() for part in key_text.split("."))
    try:
        value = yaml.safe_load(value_text) if value_text.strip() else ""
    except yaml.YAMLError:
        value = value_text
    if not isinstance(value, str) and _is_text_field(key):
        value = value_text.strip()  # `--set serve.version=0.10` means "0.10", not the number 0.1
    node = data
    for i, part in enumerate(key[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            problems.append(f"{where}: {dotted(key[: i + 1])} is a {type(child).__name__}, not a section — set it whole instead")
            return
        node = child
    node[key[-1]] = value
    origins.set(key, where)


def _expand_env(value: Any, key: Key, origins: Origins, problems: list[str]) -> Any:
    """Replace ``${env:NAME}`` (and only that form) in every string."""
    if isinstance(value, dict):
        return {k: _expand_env(v, key + (str(k),), origins, problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v, key + (str(i),), origins, problems) for i, v in enumerate(value)]
    if isinstance(value, str) and "${env:" in value:
        def substitute(match: re.Match) -> str:
            name = match.group(1)
            if name not in os.environ:
                problems.append(
                    f"{origins.of(key, '?')}: {dotted(key)}: environment variable {name} is not set — export {name}=... or write the value"
                )
                return match.group(0)
            return os.environ[name]

        return ENV_REF.sub(substitute, value)
    return value


# ----------------------------------------------------------------------------- schema errors


def _section_at(loc: Sequence[Any]) -> Any:
    """The schema section class at ``loc`` (None when ``loc`` is not inside a section)."""
    model: Any = Recipe
    for part in loc:
        if isinstance(part, int) or not (isinstance(model, type) and issubclass(model, BaseModel)):
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        model = _section_type(field.annotation)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _fields_at(loc: Sequence[Any]) -> list[str]:
    """Field names of the schema section at ``loc`` (for "did you mean")."""
    section = _section_at(loc)
    return list(section.model_fields) if section else []


def _is_text_field(key: Key) -> bool:
    """True when the schema declares ``key`` a string: a ``str`` field (``serve.version``) or a
    value of a ``dict[str, str]`` field (``serve.env.HCCL_BUFFSIZE``)."""
    def annotation(path: Key) -> Any:
        section = _section_at(path[:-1])
        field = section.model_fields.get(path[-1]) if section and path else None
        return field.annotation if field else None

    def is_text(ann: Any) -> bool:
        return ann is str or set(getattr(ann, "__args__", ())) == {str, type(None)}

    parent = annotation(key[:-1]) if len(key) > 1 else None
    if getattr(parent, "__origin__", None) is dict and getattr(parent, "__args__", (None, None))[1] is str:
        return True
    return is_text(annotation(key))


def _section_type(annotation: Any) -> Any:
    """The BaseModel inside ``X``, ``X | None`` or ``list[X]``."""
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _section_type(arg)
        if isinstance(found, type) and issubclass(found, BaseModel):
            return found
    return annotation


def _suggest(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" — did you mean '{close[0]}'?" if close else (f" — allowed: {', '.join(map(str, choices))}" if choices else "")


def _describe(err: dict, origins: Origins, default: str) -> str:
    loc = tuple(err["loc"])
    key = dotted(loc)
    where = origins.of(loc, default)
    kind = err["type"]
    if kind == "extra_forbidden":
        return f"{where}: {key}: unknown key{_suggest(loc[-1], _fields_at(loc[:-1]))}"
    if kind == "missing":
        return f"{where}: {key}: required key is missing — add `{loc[-1]}:` under `{dotted(loc[:-1])}`"
    if kind in ("literal_error", "enum"):
        expected = re.findall(r"'([^']*)'", err.get("ctx", {}).get("expected", ""))
        return f"{where}: {key}: {err['input']!r} is not allowed{_suggest(err['input'], expected)}"
    got = err.get("input")
    shown = "" if isinstance(got, (dict, list)) else f" (got {got!r})"
    return f"{where}: {key}: {err['msg'].rstrip('.')}{shown}"


# ----------------------------------------------------------------------------- public API


def load_recipe(ref: str | os.PathLike, overrides: Sequence[str] = (), *, check: bool = True,
                deploy: bool = True) -> Recipe:
    """Load, inherit, override, expand and validate a recipe.

    ``ref`` is a YAML path or a built-in name (``glm5/a3-w8a8``). With ``check`` the recipe-level
    cross-field rules run too (without the deployment-only ones when ``deploy`` is false, see
    ``check_recipe_fields``). Raises one ``RecipeError`` carrying every problem found.
    """
    path = resolve_ref(str(ref))
    problems: list[str] = []
    data, origins = _load_with_bases(path, problems)
    for item in overrides:
        _apply_override(data, item, origins, problems)
    data = _expand_env(data, (), origins, problems)
    recipe = None
    if not problems:
        try:
            recipe = Recipe.model_validate(data)
        except ValidationError as err:
            problems.extend(_describe(e, origins, str(path)) for e in err.errors())
    if recipe is not None:
        recipe._source_path = str(path)
        recipe._origins = origins
        if check:
            from ascend.recipe.checks import check_recipe_fields

            problems.extend(check_recipe_fields(recipe, deploy=deploy))
    if problems:
        raise RecipeError(f"{path}: {len(problems)} problem(s)", problems=problems)
    assert recipe is not None
    return recipe


def check_partial(path: Path) -> list[str]:
    """Problems of a partial recipe (a `base:` file, see ``is_partial``): unknown keys and wrong
    types. Missing keys are not problems: the recipes that use it as a base supply them."""
    problems: list[str] = []
    data, origins = _load_with_bases(path, problems)
    if not problems:
        try:
            Recipe.model_validate(data)
        except ValidationError as err:
            problems.extend(_describe(e, origins, str(path)) for e in err.errors() if e["type"] != "missing")
    return problems


def origin(recipe: Recipe, key: str) -> str:
    """Where ``key`` (dotted) was set: ``file:line``, ``--set ...`` or the recipe file."""
    origins: Origins | None = recipe._origins
    default = recipe.source_path or recipe.name
    return origins.of(tuple(key.split(".")), default) if origins else default


def recipe_hash(recipe: Recipe, sections: Sequence[str] | None = None) -> str:
    """A stable hash of the resolved recipe (or of some sections), recorded in artifacts.

    Stages hash only the sections their output depends on (e.g. conversion: model, parallel,
    convert), so changing the serving port does not invalidate a converted checkpoint.
    """
    data = recipe.model_dump(mode="json", include=set(sections) if sections else None, exclude={"description"})
    blob = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
