"""Per-level figures from the request results, goodput against the SLOs, and the thresholds."""

from __future__ import annotations

from typing import Any

import numpy as np

from ascend.bench.client import RequestResult

PERCENTILES = (50, 90, 99)


def distribution(values_s: list[float]) -> dict[str, float | None]:
    """mean / p50 / p90 / p99 / max in milliseconds (numpy's linear interpolation, as vLLM)."""
    if not values_s:
        return {"mean": None, **{f"p{p}": None for p in PERCENTILES}, "max": None}
    ms = np.asarray(values_s, dtype=float) * 1000.0
    out = {"mean": round(float(ms.mean()), 3)}
    out.update({f"p{p}": round(float(np.percentile(ms, p)), 3) for p in PERCENTILES})
    out["max"] = round(float(ms.max()), 3)
    return out


def is_good(r: RequestResult, slo: Any) -> bool:
    """Meets every SLO that is set (a 1-token answer has no TPOT and passes that one)."""
    if not r.ok:
        return False
    checks = [(slo.ttft_ms, r.ttft), (slo.tpot_ms, r.tpot), (slo.e2e_ms, r.e2e)]
    return all(limit is None or value is None or value * 1000.0 <= limit for limit, value in checks)


def summarize(results: list[RequestResult], duration_s: float, slo: Any) -> dict[str, Any]:
    """One level's figures; throughputs are over the level's wall time (first send -> last end)."""
    ok = [r for r in results if r.ok]
    errors = [r for r in results if not r.ok]
    out_tokens = sum(r.output_tokens or 0 for r in ok)
    in_tokens = [r.input_tokens for r in ok if r.input_tokens is not None]
    has_slo = any(v is not None for v in (slo.ttft_ms, slo.tpot_ms, slo.e2e_ms))
    good = sum(is_good(r, slo) for r in results) if has_slo else None
    per_s = (lambda n: round(n / duration_s, 4)) if duration_s > 0 else (lambda n: None)
    return {
        "requests": len(results),
        "completed": len(ok),
        "errors": len(errors),
        "error_rate": round(len(errors) / len(results), 4) if results else 0.0,
        "first_error": errors[0].error if errors else None,
        "duration_s": round(duration_s, 4),
        "requests_per_s": per_s(len(ok)),
        "output_tokens_per_s": per_s(out_tokens),
        "total_tokens_per_s": per_s(out_tokens + sum(in_tokens)),
        "input_tokens_total": sum(in_tokens),
        "output_tokens_total": out_tokens,
        "input_tokens_mean": round(sum(in_tokens) / len(in_tokens), 2) if in_tokens else None,
        "output_tokens_mean": round(out_tokens / len(ok), 2) if ok else None,
        "ttft_ms": distribution([r.ttft for r in ok if r.ttft is not None]),
        "tpot_ms": distribution([t for r in ok if (t := r.tpot) is not None]),
        "itl_ms": distribution([gap for r in ok for gap in r.itl]),
        "e2e_ms": distribution([r.e2e for r in ok]),
        "good_requests": good,
        "goodput_per_s": per_s(good) if good is not None else None,
        "goodput_ratio": round(good / len(results), 4) if good is not None and results else None,
    }


# threshold field -> (level key, sub-key or None, "min" | "max", unit)
THRESHOLDS = {
    "min_output_tokens_per_s": ("output_tokens_per_s", None, "min", "tok/s"),
    "min_requests_per_s": ("requests_per_s", None, "min", "req/s"),
    "min_goodput_ratio": ("goodput_ratio", None, "min", ""),
    "max_ttft_p99_ms": ("ttft_ms", "p99", "max", "ms"),
    "max_tpot_p99_ms": ("tpot_ms", "p99", "max", "ms"),
    "max_itl_p99_ms": ("itl_ms", "p99", "max", "ms"),
    "max_e2e_p99_ms": ("e2e_ms", "p99", "max", "ms"),
    "max_error_rate": ("error_rate", None, "max", ""),
}


def broken_thresholds(levels: list[dict[str, Any]], thresholds: Any, at: list[int]) -> list[str]:
    """One line per broken threshold and level, e.g.
    ``bench.thresholds.max_ttft_p99_ms = 500 broken at concurrency 16 (in 1024 / out 128): 812.4 ms``."""
    broken = []
    for level in levels:
        if at and level["concurrency"] not in at:
            continue
        for name, (key, sub, kind, unit) in THRESHOLDS.items():
            limit = getattr(thresholds, name)
            if limit is None:
                continue
            value = level[key][sub] if sub else level[key]
            # nothing measured (every request failed, or no SLO for goodput): not met either way
            bad = value is None or (value < limit if kind == "min" else value > limit)
            if bad:
                shown = "nothing measured" if value is None else f"{value:g}{(' ' + unit) if unit else ''}"
                broken.append(f"bench.thresholds.{name} = {limit:g} broken at {level_name(level)}: {shown}")
    return broken


def level_name(level: dict[str, Any]) -> str:
    return f"concurrency {level['concurrency']} (in {level['input_len']} / out {level['output_len']})"
