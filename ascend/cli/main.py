"""The ``ascend`` command: assembles one module per subcommand and maps errors to exit codes.

Exit codes: 0 success; 2 bad usage or bad input (one line: what, where, fix); 3 a check did not
pass; 1 only for bugs. Tracebacks only with ``ASCEND_DEBUG=1``.
"""

from __future__ import annotations

import importlib
import os
import sys

import typer

from ascend import __version__
from ascend.errors import AscendError

HELP = """\
Deploy very large MoE models (GLM-5, DeepSeek-V3/V3.2, GLM-4.x) on Huawei Ascend clusters.

One YAML recipe drives every stage: plan -> fetch -> convert -> verify -> serve -> smoke -> bench -> eval.

Examples:

\b
  ascend recipes                                   # list built-in recipes
  ascend plan glm5/a3-w8a8                         # will it fit? layout + memory per device
  ascend plan glm5/a3-w8a8 --set serve.max_model_len=131072   # too long: exit 3 + fixes
  ascend run tiny/glm5-cpu                         # the whole chain on CPU, in minutes


Set ASCEND_DEBUG=1 to see tracebacks.
"""

# One module per subcommand, in the order `ascend --help` lists them. Each module defines
# `register(app: typer.Typer) -> None`.
COMMAND_MODULES = [
    "recipes",
    "plan",
    "fetch",
    "tiny",
    "convert",
    "calibrate",
    "verify",
    "logits",
    "serve",
    "smoke",
    "bench",
    "eval",
    "run",
    "ops",
    "doctor",
]


def build_app() -> typer.Typer:
    app = typer.Typer(
        help=HELP,
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
        context_settings={"help_option_names": ["-h", "--help"]},
    )

    def version_callback(value: bool) -> None:
        if value:
            typer.echo(f"ascend-recipes {__version__}")
            raise typer.Exit()

    @app.callback()
    def _root(
        version: bool = typer.Option(
            False, "--version", callback=version_callback, is_eager=True, help="Print the version and exit."
        ),
    ) -> None:
        pass

    for name in COMMAND_MODULES:
        importlib.import_module(f"ascend.cli.{name}").register(app)
    return app


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    app = build_app()
    debug = os.environ.get("ASCEND_DEBUG") == "1"
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        # Not standalone, so that usage errors reach the handler below as one line, like all
        # other bad input (typer would print a four-line usage block).
        code = app(args=args or ["--help"], prog_name="ascend", standalone_mode=False)
    except typer.TyperException as err:  # typer's usage errors: unknown option, bad value, ...
        ctx = getattr(err, "ctx", None)
        where = f" (see '{ctx.command_path} -h')" if ctx is not None else ""
        print(f"error: {err.format_message()}{where}", file=sys.stderr)
        sys.exit(2 if ctx is not None else err.exit_code)
    except typer.Abort:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except AscendError as err:
        if debug:
            raise
        for line in err.lines():
            print(f"error: {line}", file=sys.stderr)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:  # the reader went away (`ascend plan ... | head`): nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second EPIPE at exit
        sys.exit(1)
    except Exception as err:  # a bug: say so, point at the debug switch
        if debug:
            raise
        print(
            f"internal error: {type(err).__name__}: {err} (this is a bug; rerun with ASCEND_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        sys.exit(1)
    # `raise typer.Exit(n)` comes back as n; a command's own return value means success.
    sys.exit(code if isinstance(code, int) and not isinstance(code, bool) else 0)


if __name__ == "__main__":
    main()
