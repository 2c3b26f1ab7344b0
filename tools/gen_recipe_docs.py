"""Generate docs/recipe-reference.md from the recipe schema (ascend/recipe/schema.py).

    python tools/gen_recipe_docs.py            # rewrite docs/recipe-reference.md
    python tools/gen_recipe_docs.py --check    # exit 1 if it is out of date
"""

from __future__ import annotations

import sys
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "recipe-reference.md"

HEADER = """\
# Recipe reference

Generated from `ascend/recipe/schema.py` by `tools/gen_recipe_docs.py`; do not edit by hand.

A recipe is one YAML file. Unknown keys are errors (with a "did you mean"); `base:` inherits
from another file (later keys win); `--set a.b=c` overrides any value on the command line;
`${env:NAME}` reads an environment variable. Relative paths resolve against the current
directory. `ascend show RECIPE` prints the fully resolved recipe, `ascend validate RECIPE`
checks it without touching weights or devices.

Derived values: world size = `hardware.nodes x hardware.devices_per_node`; attention TP =
world / `parallel.dp`; MoE TP = world / `parallel.ep` (as in xLLM, which has no TP flag).
"""


def type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        parts = [type_name(a) for a in args if a is not type(None)]
        return " \\| ".join(parts) + (" \\| null" if type(None) in args else "")
    if origin in (list, typing.List):
        return f"list of {type_name(args[0])}" if args else "list"
    if origin in (dict, typing.Dict):
        return f"map {type_name(args[0])} → {type_name(args[1])}" if args else "map"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return f"[{annotation.__name__}](#{annotation.__name__.lower()})"
    return getattr(annotation, "__name__", str(annotation)).replace("NoneType", "null")


def default_of(field: Any) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "**required**"
    value = field.default_factory() if field.default_factory is not None else field.default
    if isinstance(value, BaseModel):
        return "(section defaults)"
    if value is None:
        return "–"
    if value == "":
        return '`""`'
    return f"`{value}`"


def sections(model: type[BaseModel], seen: list[type[BaseModel]]) -> None:
    """Depth-first list of every nested section model, in field order."""
    if model in seen:
        return
    seen.append(model)
    for field in model.model_fields.values():
        for t in [field.annotation, *typing.get_args(field.annotation)]:
            for inner in [t, *typing.get_args(t)]:
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    sections(inner, seen)


def render() -> str:
    from ascend.recipe.schema import Recipe

    models: list[type[BaseModel]] = []
    sections(Recipe, models)
    paths = {Recipe: ""}
    for m in models:
        for name, f in m.model_fields.items():
            for t in [f.annotation, *typing.get_args(f.annotation)]:
                for inner in [t, *typing.get_args(t)]:
                    if isinstance(inner, type) and issubclass(inner, BaseModel) and inner not in paths:
                        list_like = typing.get_origin(f.annotation) is list
                        paths[inner] = f"{paths[m]}.{name}{'[]' if list_like else ''}".lstrip(".")
    out = [HEADER]
    for m in models:
        where = paths.get(m, "")
        out.append(f"## {m.__name__}\n")
        if where:
            out.append(f"Key: `{where}`\n")
        doc = (m.__doc__ or "").strip()
        if doc:
            out.append(doc + "\n")
        out += ["| key | type | default | meaning |", "|---|---|---|---|"]
        for name, f in m.model_fields.items():
            desc = (f.description or "").replace("|", "\\|")
            out.append(f"| `{name}` | {type_name(f.annotation)} | {default_of(f)} | {desc} |")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def main() -> int:
    text = render()
    if "--check" in sys.argv[1:]:
        if not OUT.is_file() or OUT.read_text() != text:
            print(f"{OUT} is out of date: run python tools/gen_recipe_docs.py", file=sys.stderr)
            return 1
        return 0
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)
    print(f"wrote {OUT} ({len(text.splitlines())} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
