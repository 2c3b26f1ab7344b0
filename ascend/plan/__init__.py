"""The deployment planner: parallel layout and per-device memory, before anything is downloaded.

- :mod:`.memory` — the memory model's terms (weights by precision, KV per token, workspace,
  HCCL buffers), each a documented formula.
- :mod:`.planner` — ``make_plan`` / ``plan_recipe`` (layout + budget + verdict + computed
  suggestions) and ``require_fit`` (CheckFailed, exit 3).
- :mod:`.checks` — ``check_recipe``: model-dependent cross-field checks for ``ascend validate``.
"""

from ascend.plan.checks import check_recipe
from ascend.plan.planner import DeviceClass, Plan, RankLayout, make_plan, parallel_layout, plan_recipe, require_fit

__all__ = [
    "DeviceClass", "Plan", "RankLayout", "check_recipe", "make_plan", "parallel_layout", "plan_recipe",
    "require_fit",
]
