"""`ascend bench`: a serving benchmark against any OpenAI-compatible endpoint.

Sweeps the recipe's concurrency levels and workloads (random-token prompts of known length, or a
JSONL dataset), measures TTFT / TPOT / ITL / end-to-end latency, throughput, errors and goodput
(definitions in ``ascend.bench.client`` and docs/bench-and-eval.md), writes ``bench.json`` and
two PNG charts into ``runs/<name>/bench/``, and lists the broken thresholds::

    from ascend.bench import Target, run_bench, load_bench
    data = run_bench(recipe.bench, Target.parse(url, model, tokenizer_dir), "runs/x/bench")
    data["broken"]          # [] when every threshold holds
    load_bench("runs/x")    # the same dict later (None if absent); charts: CHART_FILES
"""

from ascend.bench.charts import CHART_FILES
from ascend.bench.prompts import BenchError
from ascend.bench.runner import BENCH_JSON, Target, load_bench, run_bench

__all__ = ["BENCH_JSON", "CHART_FILES", "BenchError", "Target", "load_bench", "run_bench"]
