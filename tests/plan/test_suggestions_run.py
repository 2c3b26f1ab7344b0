"""Every change the planner suggests for a plan that does not fit is a command that runs.

The suggestions are run exactly as printed (the leading ``--set KEY=VALUE`` words), through the
real `ascend plan` entry point, on top of the overrides that made the plan not fit.
"""

from __future__ import annotations

import json
import shlex

import pytest

NOT_FITTING = [
    ("glm5/a3-w8a8", ["serve.max_model_len=100000000"]),  # no hardware holds this context
    ("glm5/a3-w8a8", ["serve.max_model_len=80000"]),  # just too long: every kind of fix works
    ("glm5/a3x2-bf16", ["hardware.nodes=1", "parallel.dp=1", "parallel.ep=16"]),  # BF16 on one node
    ("glm5/a2x2-w8a8", ["serve.max_model_len=200000"]),  # scale-out beyond the hosts listed
]


def _as_args(sets: list[str]) -> list[str]:
    return [word for s in sets for word in ("--set", s)]


def suggested_sets(suggestion: str) -> list[str]:
    """The ``--set`` values a suggestion starts with (the rest is explanation)."""
    words, sets = shlex.split(suggestion), []
    while len(words) >= 2 and words[0] == "--set":
        sets.append(words[1])
        words = words[2:]
    return sets


@pytest.mark.parametrize(("recipe", "sets"), NOT_FITTING)
def test_every_suggestion_runs_and_fits(cli, recipe, sets):
    res = cli("plan", recipe, *_as_args(sets), "--json")
    assert res.code == 3, res.err
    suggestions = json.loads(res.out)["suggestions"]
    assert suggestions and suggestions[0] in res.err  # the same text is the error's advice
    for suggestion in suggestions:
        extra = suggested_sets(suggestion)
        assert extra, f"not a command: {suggestion!r}"
        fixed = cli("plan", recipe, *_as_args(sets + extra), "--json")
        assert fixed.code == 0, f"`ascend plan {recipe} {shlex.join(_as_args(sets + extra))}`: {fixed.err}"
        assert json.loads(fixed.out)["fits"] is True


def test_the_cases_cover_every_kind_of_suggestion(cli):
    keys = set()
    for recipe, sets in NOT_FITTING:
        for suggestion in json.loads(cli("plan", recipe, *_as_args(sets), "--json").out)["suggestions"]:
            keys.update(s.partition("=")[0] for s in suggested_sets(suggestion))
    assert keys >= {"serve.max_model_len", "convert.precision.default", "hardware.nodes", "serve.speculative",
                    "serve.memory_utilization"}


def test_help_examples_of_plan_run(cli):
    """The `ascend plan` examples of `ascend --help` and `ascend plan --help` with built-in recipes
    exit as they say: 0, or 3 where marked (scale-out needs no hosts to plan)."""
    lines = cli("--help").out.splitlines() + cli("plan", "--help").out.splitlines()
    examples = [line.strip() for line in lines if line.strip().startswith("ascend plan glm5/")]
    assert len(examples) >= 4
    for line in examples:
        command, _, comment = line.partition("#")
        res = cli(*shlex.split(command)[1:])
        assert res.code == (3 if "exit 3" in comment else 0), f"{line}: {res.err}"


def test_deploying_still_needs_the_hosts(cli):
    res = cli("validate", "glm5/a3-w8a8", "--set", "hardware.nodes=2", "--set", "parallel.ep=32")
    assert res.code == 2 and "hardware.hosts" in res.err
