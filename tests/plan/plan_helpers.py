"""Settings for planner tests, from flat keywords (the recipe's field names)."""

from __future__ import annotations

from ascend.models.precision import PrecisionPolicy
from ascend.models.sharding import ParallelLayout
from ascend.recipe.schema import ServeSection
from ascend.recipe.settings import Settings


def settings(chip: str, nodes: int = 1, devices_per_node: int = 16, dp: int = 1, ep: int = 1,
             precision: str = "bf16", rules: tuple = (), speculative_tokens: int = 0, **serve) -> Settings:
    """``serve`` takes ServeSection fields (max_model_len, memory_utilization, env, engine, ...)."""
    spec = {"method": "mtp", "num_tokens": speculative_tokens} if speculative_tokens else None
    return Settings(chip, ParallelLayout(nodes, devices_per_node, dp, ep), PrecisionPolicy(precision, tuple(rules)),
                    ServeSection(speculative=spec, **serve))
