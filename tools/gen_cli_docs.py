"""Generate docs/cli.md from the `ascend` Typer app (every command, its help and options).

    python tools/gen_cli_docs.py            # rewrite docs/cli.md
    python tools/gen_cli_docs.py --check    # exit 1 if docs/cli.md is out of date
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

# Typer ships its own copy of click (typer._click): use duck typing, not click's classes.

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "cli.md"

HEADER = """\
# CLI reference

Generated from the command definitions by `tools/gen_cli_docs.py`; do not edit by hand.

Exit codes (every command): **0** success; **2** bad usage, bad recipe or bad input (one line:
what, where, fix); **3** a check did not pass (plan does not fit, verify mismatch, smoke
failure); **1** a bug. Set `ASCEND_DEBUG=1` for tracebacks. `RECIPE` is a YAML path or a
built-in name such as `glm5/a3-w8a8`; `--set KEY=VALUE` overrides any recipe value.
"""


def _help_text(text: str) -> str:
    """Click help -> Markdown: ``\\b`` blocks (examples) become code blocks."""
    out: list[str] = []
    lines = (text or "").strip("\n").splitlines()
    i = 0
    while i < len(lines):
        if lines[i].strip() == "\b":
            block = []
            i += 1
            while i < len(lines) and lines[i].strip():
                block.append(lines[i].strip() if not lines[i].startswith("    ") else lines[i][2:])
                i += 1
            out += ["```bash", *[b.strip() for b in block], "```"]
            continue
        out.append(lines[i].strip())
        i += 1
    return "\n".join(out).strip() + "\n"


def _param_row(p, ctx) -> str | None:
    if p.param_type_name == "argument":
        name = f"`{(p.metavar or p.name).upper()}`"
        kind = "argument" + ("" if p.required else " (optional)")
        return f"| {name} | {kind} | {getattr(p, 'help', '') or ''} |"
    if p.param_type_name != "option" or p.hidden or p.name == "help":
        return None
    flags = ", ".join(f"`{o}`" for o in [*p.opts, *p.secondary_opts])
    record = p.get_help_record(ctx)
    help_text = (record[1] if record else "").replace("|", r"\|")
    return f"| {flags} | option | {help_text} |"


def render(app: typer.Typer) -> str:
    group = typer.main.get_command(app)
    ctx = group.context_class(group, info_name="ascend")
    parts = [HEADER, "## `ascend`\n", _help_text(group.help or ""), ""]
    names = list(group.list_commands(ctx))
    parts.append("Commands: " + ", ".join(f"[`{n}`](#ascend-{n})" for n in names) + "\n")
    for name in names:
        cmd = group.get_command(ctx, name)
        sub = cmd.context_class(cmd, info_name=name, parent=ctx)
        parts.append(f"## `ascend {name}`\n")
        parts.append("```\n" + cmd.get_usage(sub).strip() + "\n```\n")
        parts.append(_help_text(cmd.help or ""))
        rows = [r for p in cmd.get_params(sub) if (r := _param_row(p, sub))]
        if rows:
            parts += ["", "| name | kind | description |", "|---|---|---|", *rows, ""]
    return "\n".join(parts).rstrip() + "\n"


def main() -> int:
    from ascend.cli.main import build_app

    text = render(build_app())
    if "--check" in sys.argv[1:]:
        current = OUT.read_text() if OUT.is_file() else ""
        if current != text:
            print(f"{OUT} is out of date: run python tools/gen_cli_docs.py", file=sys.stderr)
            return 1
        return 0
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)
    print(f"wrote {OUT} ({len(text.splitlines())} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
