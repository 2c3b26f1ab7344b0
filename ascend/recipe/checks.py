"""Cross-field rules that need only the recipe itself (no model config, no chip table).

Model-dependent rules (heads divisible by attention TP, experts by EP, FP8 block alignment,
precision supported by the chip) live in `ascend.plan.check_recipe`; `ascend validate` runs both.
Each problem is one line with the numbers and the fix.
"""

from __future__ import annotations

from ascend.recipe.schema import Recipe


def check_recipe_fields(recipe: Recipe, *, deploy: bool = True) -> list[str]:
    """Every recipe-level cross-field problem, each prefixed with where the key was set.

    ``deploy=False`` leaves out the rules about where to deploy (``hardware.hosts``): a plan
    needs only the node count, so `ascend plan --set hardware.nodes=2` works before the
    machines exist; every command that deploys (run, serve, validate) still checks them.
    """
    from ascend.recipe.load import origin

    problems: list[str] = []

    def problem(key: str, message: str) -> None:
        problems.append(f"{origin(recipe, key)}: {key}: {message}")

    hw, serve, model, conv = recipe.hardware, recipe.serve, recipe.model, recipe.convert
    for key, message in recipe.layout.problems():
        problem(key, message)

    if deploy:
        if hw.hosts and len(hw.hosts) != hw.nodes:
            problem("hardware.hosts", f"{len(hw.hosts)} host(s) listed for {hw.nodes} node(s) — list exactly one address per node")
        elif hw.nodes > 1 and not hw.hosts:
            problem("hardware.hosts", f"multi-node ({hw.nodes} nodes) needs one address per node — add hosts: [node0-ip, node1-ip, ...]")
        if len(set(hw.hosts)) != len(hw.hosts):
            problem("hardware.hosts", "the same address is listed twice — each node needs its own address")

    if model.source in ("modelscope", "huggingface") and not model.id:
        problem("model.id", f"source '{model.source}' needs a hub id — add model.id, e.g. ZhipuAI/GLM-5-FP8")
    if model.tiny is not None and model.source != "tiny":
        problem("model.tiny", f"only used with model.source: tiny (source is '{model.source}') — remove it or set source: tiny")

    if serve.engine == "xllm" and hw.chip == "cpu":
        problem("serve.engine", "xllm needs Ascend NPUs but hardware.chip is cpu — use serve.engine: cpu for the CPU engine")
    if serve.engine == "cpu" and hw.nodes > 1 and not (hw.hosts and all(_is_loopback(h) for h in hw.hosts)):
        # several "nodes" on one machine (127.0.0.0/8 is all loopback on Linux) test the node scripts
        problem("serve.engine", "the CPU engine runs on one machine — set hardware.nodes: 1, or hosts on 127.0.0.0/8 "
                "to simulate several nodes")
    if serve.port == serve.master_port:
        problem("serve.master_port", f"equals serve.port ({serve.port}) — pick another port for rank rendezvous")
    if serve.speculative is not None and serve.speculative.method == "mtp" and conv.mtp != "export" and serve.engine == "xllm":
        problem(
            "convert.mtp",
            f"is '{conv.mtp}' but serve.speculative uses MTP, which xLLM loads from an exported draft dir — set convert.mtp: export",
        )
    formats = {conv.precision.default, *(rule.format for rule in conv.precision.rules)}
    if serve.engine == "xllm" and "w8a8" in formats:
        from ascend.models.quant_schemes import xllm_accepts

        why = xllm_accepts(model.family, conv.precision.w8a8_scheme)
        if why:
            problem("convert.precision.w8a8_scheme",
                    f"'{conv.precision.w8a8_scheme}' cannot be served by xLLM: {why} — use w8a8_scheme: w8a8")
    if serve.max_tokens_per_batch < serve.max_seqs:
        problem(
            "serve.max_tokens_per_batch",
            f"{serve.max_tokens_per_batch} is below serve.max_seqs ({serve.max_seqs}); each running sequence needs a token per step — raise it",
        )
    return problems


def _is_loopback(host: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
