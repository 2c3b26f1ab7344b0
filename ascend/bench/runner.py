"""The sweep: every workload x concurrency level, then bench.json and the charts."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import httpx

from ascend.bench.client import RequestResult, stream_request
from ascend.bench.metrics import broken_thresholds, level_name, summarize
from ascend.bench.prompts import BenchError, Prompt, TokenizerKit, load_dataset, random_prompts
from ascend.fileio import write_json

BENCH_JSON = "bench.json"
SCHEMA = "ascend-bench/1"


@dataclass(frozen=True)
class Target:
    """The endpoint under test. ``root`` has no ``/v1``; ``tokenizer`` is a directory with the
    model's ``tokenizer.json`` (and chat template), needed for random prompts and for counting
    tokens when the server sends no usage."""

    root: str
    model: str
    tokenizer: str | None = None
    api_key: str | None = None

    @classmethod
    def parse(cls, base_url: str, model: str, tokenizer: str | None = None, api_key: str | None = None) -> "Target":
        root = base_url.rstrip("/").removesuffix("/v1")
        if not root.startswith(("http://", "https://")):
            root = "http://" + root
        return cls(root, model, tokenizer, api_key)


def num_prompts(cfg: Any, concurrency: int) -> int:
    return cfg.num_prompts or max(8, 4 * concurrency)


def run_bench(cfg: Any, target: Target, out_dir: str | Path, *, log: Callable[[str], None] = lambda s: None,
              charts: bool = True) -> dict[str, Any]:
    """Run the sweep of ``cfg`` (a recipe's ``bench`` section) against ``target``; write
    ``out_dir/bench.json`` and the charts; return the bench.json data. Broken thresholds are listed
    in ``data["broken"]`` (the caller turns them into exit 3)."""
    if cfg.thresholds.min_goodput_ratio is not None and not any(
        v is not None for v in (cfg.slo.ttft_ms, cfg.slo.tpot_ms, cfg.slo.e2e_ms)
    ):
        raise BenchError("bench.thresholds.min_goodput_ratio is set but bench.slo sets no objective",
                         fix="set bench.slo.ttft_ms / tpot_ms / e2e_ms, or drop the threshold")
    out_dir = Path(out_dir)
    kit = TokenizerKit(target.tokenizer) if target.tokenizer else None
    if kit is None and not cfg.dataset:
        raise BenchError("random prompts need the model's tokenizer", fix="pass --tokenizer DIR or --dataset FILE")
    t0, started = time.monotonic(), datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    levels = asyncio.run(_sweep(cfg, target, kit, log))
    broken = broken_thresholds(levels, cfg.thresholds, cfg.thresholds_at)
    data: dict[str, Any] = {
        "schema": SCHEMA,
        "started_at": started,
        "seconds": round(time.monotonic() - t0, 3),
        "target": {"base_url": target.root, "model": target.model, "api": cfg.api, "tokenizer": target.tokenizer},
        "config": cfg.model_dump(mode="json"),
        "levels": levels,
        "broken": broken,
        "ok": not broken,
    }
    data["charts"], data["charts_skipped"] = {}, "charts not asked for"
    if charts:
        try:
            import matplotlib  # noqa: F401  (a dependency; a hand-made environment may lack it)
        except ImportError as err:
            data["charts_skipped"] = f"charts skipped: {err} (pip install matplotlib)"
            log(data["charts_skipped"])
        else:
            from ascend.bench.charts import write_charts

            data["charts"] = write_charts(levels, out_dir, f"{target.model} @ {target.root} ({cfg.api})")
            data["charts_skipped"] = None
    write_json(out_dir / BENCH_JSON, data)
    return data


async def _sweep(cfg: Any, target: Target, kit: TokenizerKit | None, log: Callable[[str], None]) -> list[dict[str, Any]]:
    url = f"{target.root}/v1/{'chat/completions' if cfg.api == 'chat' else 'completions'}"
    headers = {"Authorization": f"Bearer {target.api_key}"} if target.api_key else {}
    limits = httpx.Limits(max_connections=max(cfg.concurrency) + 1, max_keepalive_connections=max(cfg.concurrency) + 1)
    levels = []
    async with httpx.AsyncClient(timeout=httpx.Timeout(cfg.timeout_s), limits=limits) as client:
        send = lambda p: stream_request(client, url, _body(cfg, target, p), headers)  # noqa: E731
        for wi, work in enumerate(cfg.workloads):
            pool = load_dataset(cfg.dataset, api=cfg.api, kit=kit, output_len=work.output_len) if cfg.dataset else None
            for ci, conc in enumerate(cfg.concurrency):
                n = num_prompts(cfg, conc)
                if pool is not None:
                    prompts = [pool[i % len(pool)] for i in range(n)]
                else:
                    prompts = random_prompts(kit, n + cfg.warmup, work.input_len, work.output_len, api=cfg.api,
                                             lengths=cfg.lengths, range_ratio=cfg.range_ratio, seed=cfg.seed + 1000 * wi + ci)
                if wi == ci == 0:
                    await _warmup(send, (prompts if pool is None else pool)[: cfg.warmup], url)
                prompts = prompts[-n:]
                results, duration = await _level(send, prompts, conc, cfg.timeout_s)
                _count_tokens(results, prompts, kit)
                level = {"concurrency": conc, "input_len": "dataset" if pool is not None else work.input_len,
                         "output_len": work.output_len, **summarize(results, duration, cfg.slo)}
                levels.append(level)
                log(f"  bench {level_name(level)}: {level['completed']}/{level['requests']} ok, "
                    f"{level['output_tokens_per_s']} tok/s, TTFT p50 {level['ttft_ms']['p50']} ms, "
                    f"TPOT p50 {level['tpot_ms']['p50']} ms")
    return levels


def _body(cfg: Any, target: Target, p: Prompt) -> dict[str, Any]:
    body = {"model": target.model, **p.payload, "max_tokens": p.max_tokens, "stream": True,
            "stream_options": {"include_usage": True}}
    if cfg.ignore_eos:
        body["ignore_eos"] = True
    return {**body, **cfg.extra_body}


async def _warmup(send: Callable, prompts: list[Prompt], url: str) -> None:
    """Unmeasured requests; the first failure means the endpoint is not usable: stop with one line."""
    for p in prompts:
        r = await send(p)
        if not r.ok:
            raise BenchError(f"bench warm-up request to {url} failed: {r.error}",
                             fix="check that the service is up (`ascend smoke`), the model id and the endpoint")


async def _level(send: Callable, prompts: list[Prompt], concurrency: int, timeout_s: float) -> tuple[list[RequestResult], float]:
    """All prompts with at most ``concurrency`` in flight (as vLLM's ``--max-concurrency``)."""
    gate = asyncio.Semaphore(concurrency)

    async def one(p: Prompt) -> RequestResult:
        async with gate:
            start = time.perf_counter()
            try:  # the whole request, not only each read (httpx's timeout)
                return await asyncio.wait_for(send(p), timeout_s)
            except asyncio.TimeoutError:
                return RequestResult(ok=False, error=f"timed out after {timeout_s:g} s", start=start, e2e=timeout_s)

    t0 = time.perf_counter()
    results = await asyncio.gather(*(one(p) for p in prompts))
    return list(results), time.perf_counter() - t0


def _count_tokens(results: list[RequestResult], prompts: list[Prompt], kit: TokenizerKit | None) -> None:
    """Output tokens from the server's usage, else the generated text through the tokenizer."""
    for r, p in zip(results, prompts):
        r.input_tokens = r.usage_input_tokens if r.usage_input_tokens is not None else p.input_tokens
        if not r.ok:
            continue
        if r.usage_output_tokens is not None:
            r.output_tokens = r.usage_output_tokens
        elif kit is not None:
            r.output_tokens = kit.count(r.text)
        else:
            raise BenchError("the server sent no usage and no tokenizer is known to count output tokens",
                             fix="pass --tokenizer DIR (the model's tokenizer.json)")


def load_bench(run_dir: str | Path) -> dict[str, Any] | None:
    """``run_dir/bench/bench.json`` as a dict (chart file names under ``charts``, relative to
    ``run_dir/bench``), or None when there is none or it is unreadable."""
    try:
        data = json.loads((Path(run_dir) / "bench" / BENCH_JSON).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("schema") == SCHEMA else None
