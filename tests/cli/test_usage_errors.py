"""Usage errors are bad input like any other: one line naming the problem and where to look, exit 2
(typer alone prints a four-line usage block)."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["plan", "tiny/glm5-cpu", "--bogus"], "No such option: --bogus (see 'ascend plan -h')"),
        (["nosuch"], "No such command 'nosuch'. (see 'ascend -h')"),
        (["plan"], "Missing argument 'recipe'. (see 'ascend plan -h')"),
        (["convert", "--src", "a", "--out", "b", "--precision", "fp4"], "'fp4' is not one of"),
        (["bench", "tiny/glm5-cpu", "--input-len", "many"], "Invalid value for '--input-len'"),
    ],
)
def test_usage_error_is_one_line_with_exit_2(cli, argv, says):
    res = cli(*argv)
    assert res.code == 2
    assert res.err.count("\n") == 1 and res.err.startswith("error: ") and says in res.err, res.err


def test_no_arguments_print_the_help(cli):
    res = cli()
    assert res.code == 0 and "Usage: ascend" in res.out and "plan" in res.out
