"""Typed, frozen settings derived once from a recipe, one object per concern.

- :class:`~ascend.models.sharding.ParallelLayout` — world, dp, TP, EP, MoE-TP, rank -> coordinates
  and every divisibility check (``recipe.layout``);
- :class:`~ascend.models.precision.PrecisionPolicy` — the format of every tensor
  (``recipe.precision``);
- the ``serve`` and ``smoke`` sections themselves: typed and frozen, with the schema's defaults
  (the only defaults there are).

:class:`Settings` bundles what the planner reads, so a suggestion can vary one field and re-plan.
Flag-mode commands build the same objects from their flags.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from ascend.models.precision import PrecisionPolicy
from ascend.models.sharding import ParallelLayout
from ascend.recipe.schema import ServeSection


@dataclass(frozen=True)
class Settings:
    """The planner's view of a deployment: chip, layout, precision and serving limits."""

    chip: str
    layout: ParallelLayout
    precision: PrecisionPolicy = PrecisionPolicy()
    serve: ServeSection = ServeSection()

    @classmethod
    def from_recipe(cls, recipe: Any) -> Settings:
        return cls(recipe.hardware.chip, recipe.layout, recipe.precision, recipe.serve)

    @property
    def speculative_tokens(self) -> int:
        """MTP draft tokens per step (0 = off; on, the MTP layer is loaded as a draft model)."""
        return self.serve.speculative.num_tokens if self.serve.speculative is not None else 0

    def with_serve(self, **changes: Any) -> Settings:
        return replace(self, serve=self.serve.model_copy(update=changes))

    def with_layout(self, **changes: Any) -> Settings:
        return replace(self, layout=replace(self.layout, **changes))
