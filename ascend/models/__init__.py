"""Facts about the supported model families, as data: no torch, no I/O beyond a config.json.

- :mod:`.args` — ``ModelArgs`` from ``config.json`` (``ModelArgs.from_config``, ``load_model_args``).
- :mod:`.tensors` — ``TensorSpec`` for every checkpoint weight (``tensor_specs``) and
  ``param_counts``, from one table of name patterns.
- :mod:`.sharding` — ``ShardCoords`` and ``shard_slice``: the one place partitioning is decided.
- :mod:`.catalog` — published configs by hub id and ``model_args_for_recipe``.
- :mod:`.tiny` — tiny configs per family (reference-models area).
"""

from ascend.models.args import FAMILIES, ModelArgs, QuantConfig, load_model_args
from ascend.models.catalog import known_model_ids, model_args_for_recipe, published_config, published_model_args
from ascend.models.sharding import (
    ShardAlignmentError,
    ShardCoords,
    expert_range,
    fp8_alignment_problem,
    local_shape,
    shard_slice,
    vocab_range,
)
from ascend.models.tensors import COMPONENTS, SPLITS, ParamCounts, TensorSpec, find_spec, param_counts, tensor_specs

__all__ = [
    "COMPONENTS", "FAMILIES", "SPLITS", "ModelArgs", "ParamCounts", "QuantConfig", "ShardAlignmentError",
    "ShardCoords", "TensorSpec", "expert_range", "find_spec", "fp8_alignment_problem", "known_model_ids",
    "load_model_args", "local_shape", "model_args_for_recipe", "param_counts", "published_config",
    "published_model_args", "shard_slice", "tensor_specs", "vocab_range",
]
