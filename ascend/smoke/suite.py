"""Run the smoke checks against one endpoint and collect a :class:`SmokeReport`.

Order matters only for cost: readiness first; if the endpoint cannot be reached at all, the
remaining checks are skipped with that reason instead of each failing the same way.
"""

from __future__ import annotations

import difflib
import time
from typing import Any, Callable

import httpx

from ascend.errors import SmokeError
from ascend.smoke.checks import CHECKS, THRESHOLDS, Context, Fail, Skip, SmokeConfig
from ascend.smoke.report import CheckResult, SmokeReport
from ascend.smoke.wire import Endpoint


def _unknown(name: str, known: list[str], what: str, where: str) -> SmokeError:
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(known)}"
    return SmokeError(f"unknown {what} {name!r} in {where}", fix=hint)


def validate_config(cfg: SmokeConfig, where: str = "smoke") -> None:
    """Reject unknown check or threshold names up front (a typo must not silently skip a check)."""
    for name in list(cfg.checks or []) + list(cfg.skip):
        if name not in CHECKS:
            raise _unknown(name, list(CHECKS), "check", f"{where}.checks")
    for name in cfg.thresholds:
        if name not in THRESHOLDS:
            raise _unknown(name, list(THRESHOLDS), "threshold", f"{where}.thresholds")
    if cfg.concurrency < 1:
        raise SmokeError(f"{where}.concurrency is {cfg.concurrency}", fix="use 1 or more")


def wait_ready(ep: Endpoint, timeout: float) -> None:
    """Poll ``GET /health`` until 200 or ``timeout`` seconds pass (xLLM opens HTTP after loading)."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    with httpx.Client(trust_env=False) as http:
        while True:
            try:
                r = http.get(ep.root + "/health", headers=ep.headers(), timeout=5)
                if r.status_code == 200:
                    return
                last = f"HTTP {r.status_code}"
            except httpx.HTTPError as err:
                last = type(err).__name__
            if time.monotonic() >= deadline:
                raise SmokeError(
                    f"{ep.root}/health not ready after {timeout:g}s ({last})",
                    fix="check the server log; raise --wait for large checkpoints",
                )
            time.sleep(0.5)


def run_smoke(
    ep: Endpoint,
    cfg: SmokeConfig,
    on_result: Callable[[CheckResult], None] | None = None,
) -> SmokeReport:
    """Run every selected check against ``ep``; never raises for a misbehaving endpoint."""
    import openai

    validate_config(cfg)
    report = SmokeReport(ep.root, ep.model)
    start = time.monotonic()
    # trust_env=False: an HTTP proxy in the environment must not intercept local health checks.
    with httpx.Client(trust_env=False) as http:
        client = openai.OpenAI(
            base_url=ep.api,
            api_key=ep.api_key or "none",
            max_retries=0,
            timeout=ep.timeout,
            http_client=httpx.Client(trust_env=False, timeout=ep.timeout),
        )
        ctx = Context(ep, cfg, client, http)
        unreachable: str | None = None
        for name, check in CHECKS.items():
            t0 = time.monotonic()
            if cfg.checks is not None and name not in cfg.checks:
                result = CheckResult(name, "skip", "not selected (smoke.checks / --checks)")
            elif name in cfg.skip:
                result = CheckResult(name, "skip", cfg.skip[name])
            elif unreachable:
                result = CheckResult(name, "skip", f"not run: {unreachable}")
            else:
                result = _run_one(name, check, ctx)
                if result.status == "fail" and result.detail.startswith("cannot connect"):
                    unreachable = f"endpoint unreachable ({ep.root})"
            result.seconds = time.monotonic() - t0
            report.results.append(result)
            if on_result:
                on_result(result)
        client.close()
    report.seconds = time.monotonic() - start
    return report


def _run_one(name: str, check: Callable[[Context], Any], ctx: Context) -> CheckResult:
    import openai

    try:
        out = check(ctx)
    except Fail as err:
        metrics = err.args[1] if len(err.args) > 1 else {}
        return CheckResult(name, "fail", str(err.args[0]), metrics=metrics)
    except Skip as err:
        return CheckResult(name, "skip", str(err))
    except (httpx.ConnectError, openai.APIConnectionError) as err:
        return CheckResult(name, "fail", f"cannot connect: {err}")
    except (httpx.TimeoutException, openai.APITimeoutError):
        return CheckResult(name, "fail", f"timed out after {ctx.ep.timeout:g}s")
    except openai.APIStatusError as err:
        return CheckResult(name, "fail", f"HTTP {err.status_code}: {str(err.message)[:200]}")
    except (httpx.HTTPError, openai.OpenAIError) as err:
        return CheckResult(name, "fail", f"{type(err).__name__}: {err}")
    except (KeyError, IndexError, TypeError, AttributeError, ValueError) as err:
        # The response did not have the OpenAI shape the check relies on.
        return CheckResult(name, "fail", f"malformed response ({type(err).__name__}: {err})")
    if isinstance(out, tuple):
        return CheckResult(name, "pass", out[0], metrics=out[1])
    return CheckResult(name, "pass", out)


def config_from_recipe(recipe: Any) -> SmokeConfig:
    """The smoke settings a recipe implies, checked (unknown check or threshold names)."""
    cfg = SmokeConfig.from_recipe(recipe)
    validate_config(cfg, "smoke")
    return cfg
