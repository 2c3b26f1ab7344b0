"""Built-in recipes: `recipes/<family>/<name>.yaml`, addressed as `<family>/<name>`.

They ship inside the wheel as `ascend/_recipes` (see pyproject.toml), so built-in names work from
a regular install; in a source checkout the top-level `recipes/` folder is used. Folders whose
name starts with `_` hold partial recipes for `base:` and are not listed.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from ascend.errors import RecipeError


def builtin_root() -> Path:
    """The folder holding the built-in recipes."""
    package = Path(__file__).resolve().parents[1]
    installed = package / "_recipes"
    if installed.is_dir():
        return installed
    return package.parent / "recipes"


def builtin_names() -> list[str]:
    """All built-in recipe names, sorted (`glm5/a3-w8a8`, `tiny/glm5-cpu`, ...)."""
    root = builtin_root()
    if not root.is_dir():
        return []
    names = []
    for path in root.rglob("*.yaml"):
        rel = path.relative_to(root)
        if any(part.startswith("_") for part in rel.parts):
            continue
        names.append(rel.with_suffix("").as_posix())
    return sorted(names)


def is_partial(path: Path) -> bool:
    """A partial recipe, only used through `base:`: it sits in a folder named `_...`."""
    return path.resolve().parent.name.startswith("_")


def resolve_ref(ref: str) -> Path:
    """A recipe reference (path or built-in name) -> the YAML file."""
    path = Path(ref).expanduser()
    if path.is_file():
        return path
    name = ref[:-5] if ref.endswith(".yaml") else ref
    candidate = builtin_root() / f"{name}.yaml"
    if candidate.is_file() and not any(part.startswith("_") for part in Path(name).parts):
        return candidate
    names = builtin_names()
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise RecipeError(
        f"no recipe file or built-in recipe named '{ref}'",
        fix=f"{hint}run `ascend recipes` to list built-in recipes, or pass a path to a YAML file",
    )
