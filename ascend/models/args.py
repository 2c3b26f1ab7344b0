"""``ModelArgs``: the architecture facts of one checkpoint, read from its ``config.json``.

One dataclass covers the four supported families. Derived keys follow transformers 5.23
(``models/{glm_moe_dsa,deepseek_v3,deepseek_v32,glm4_moe}/configuration_*.py``):

- ``qk_head_dim = qk_nope_head_dim + qk_rope_head_dim`` (MLA families).
- ``mlp_layer_types``: taken from the config when present, else ``"dense"`` for the first
  ``first_k_dense_replace`` layers and ``"sparse"`` (MoE) for the rest.
- ``indexer_types`` (DSA families): GLM-5 derives them from ``index_topk_pattern`` or
  ``index_topk_freq`` / ``index_skip_topk_offset`` (GLM-5.2+; GLM-5 and 5.1 are all ``"full"``);
  DeepSeek-V3.2 runs the indexer on every layer.
- ``rope_parameters``: the new serialisation is used as is; the old ``rope_theta`` +
  ``rope_scaling`` pair is folded into it the way ``PreTrainedConfig.convert_rope_params_to_dict``
  does (``rope_type`` from ``type``, ``partial_rotary_factor`` moved inside).
- MTP (next-n) layers sit after the main stack: indices ``num_hidden_layers ..
  num_hidden_layers + num_nextn_predict_layers - 1``.

No I/O except :func:`load_model_args`, which reads ``config.json`` (and peeks at the safetensors
index to see whether the MTP layer carries its own embedding/head copies).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ascend.errors import CheckpointError

FAMILIES: tuple[str, ...] = ("glm_moe_dsa", "deepseek_v3", "deepseek_v32", "glm4_moe")
MLA_FAMILIES = frozenset({"glm_moe_dsa", "deepseek_v3", "deepseek_v32"})
DSA_FAMILIES = frozenset({"glm_moe_dsa", "deepseek_v32"})

# Per-family defaults for keys a config.json may omit: the transformers 5.23 class defaults.
_DEFAULTS: dict[str, dict[str, Any]] = {
    "glm_moe_dsa": dict(
        vocab_size=154880, hidden_size=6144, intermediate_size=12288, moe_intermediate_size=2048,
        num_hidden_layers=78, num_attention_heads=64, num_key_value_heads=64, n_shared_experts=1,
        n_routed_experts=256, routed_scaling_factor=2.5, kv_lora_rank=512, q_lora_rank=2048,
        qk_rope_head_dim=64, v_head_dim=256, qk_nope_head_dim=192, n_group=1, topk_group=1,
        num_experts_per_tok=8, norm_topk_prob=True, max_position_embeddings=202752,
        rms_norm_eps=1e-5, attention_bias=False, index_topk=2048, index_head_dim=128,
        index_n_heads=32, first_k_dense_replace=3, tie_word_embeddings=False,
        num_nextn_predict_layers=0, rope_interleave=True, indexer_rope_interleave=True,
    ),
    "deepseek_v3": dict(
        vocab_size=129280, hidden_size=7168, intermediate_size=18432, moe_intermediate_size=2048,
        num_hidden_layers=61, num_attention_heads=128, num_key_value_heads=None, n_shared_experts=1,
        n_routed_experts=256, routed_scaling_factor=2.5, kv_lora_rank=512, q_lora_rank=1536,
        qk_rope_head_dim=64, v_head_dim=128, qk_nope_head_dim=128, n_group=8, topk_group=4,
        num_experts_per_tok=8, first_k_dense_replace=3, norm_topk_prob=True,
        max_position_embeddings=4096, rms_norm_eps=1e-6, attention_bias=False,
        tie_word_embeddings=False, num_nextn_predict_layers=1, rope_interleave=True,
    ),
    "deepseek_v32": dict(
        vocab_size=129280, hidden_size=7168, intermediate_size=18432, moe_intermediate_size=2048,
        num_hidden_layers=61, num_attention_heads=128, num_key_value_heads=128, n_shared_experts=1,
        n_routed_experts=256, routed_scaling_factor=2.5, kv_lora_rank=512, q_lora_rank=1536,
        qk_rope_head_dim=64, v_head_dim=128, qk_nope_head_dim=128, n_group=8, topk_group=4,
        num_experts_per_tok=8, norm_topk_prob=True, max_position_embeddings=163840,
        rms_norm_eps=1e-6, attention_bias=False, index_topk=2048, index_head_dim=128,
        index_n_heads=64, first_k_dense_replace=3, tie_word_embeddings=False,
        num_nextn_predict_layers=0, rope_interleave=True, indexer_rope_interleave=False,
    ),
    "glm4_moe": dict(
        vocab_size=151552, hidden_size=4096, intermediate_size=10944, num_hidden_layers=46,
        num_attention_heads=96, num_key_value_heads=8, max_position_embeddings=131072,
        rms_norm_eps=1e-5, tie_word_embeddings=False, attention_bias=False,
        moe_intermediate_size=1408, num_experts_per_tok=8, n_shared_experts=1, n_routed_experts=128,
        routed_scaling_factor=1.0, n_group=1, topk_group=1, first_k_dense_replace=1,
        norm_topk_prob=True, use_qk_norm=False, num_nextn_predict_layers=1,
        partial_rotary_factor=0.5,
    ),
}


@dataclass(frozen=True)
class QuantConfig:
    """``quantization_config`` of an FP8 (or other) checkpoint.

    Attributes:
        method: ``quant_method`` ("fp8", "compressed-tensors", ...).
        fmt: element format ("e4m3").
        block_size: ``weight_block_size`` (rows, cols), e.g. (128, 128); None when per-channel.
        scale_fmt: None (float32 scales) or "ue8m0" (power-of-two scales, still stored float32).
        activation_scheme: "dynamic" for DeepSeek/GLM FP8.
        modules_to_not_convert: advisory list (wrong for GLM-5; detection uses ``_scale_inv``).
    """

    method: str
    fmt: str | None = None
    block_size: tuple[int, int] | None = None
    scale_fmt: str | None = None
    activation_scheme: str | None = None
    modules_to_not_convert: tuple[str, ...] = ()

    @property
    def is_block_fp8(self) -> bool:
        return self.method == "fp8" and self.block_size is not None


@dataclass
class ModelArgs:
    """Architecture of one checkpoint (all four families; fields a family lacks are 0 / None).

    Shape facts:
        vocab_size, hidden_size (h), num_hidden_layers (main stack, MTP excluded).
        intermediate_size: dense MLP width (first ``first_k_dense_replace`` layers).
        moe_intermediate_size: width of one routed or shared expert.
    Attention (``attention`` is "mla" or "gqa"):
        num_attention_heads (H), num_key_value_heads, head_dim (GQA per-head width; for MLA
        transformers sets it to qk_rope_head_dim), attention_bias, use_qk_norm (GQA QK-norm).
        MLA: q_lora_rank (None = plain q_proj), kv_lora_rank, qk_nope_head_dim,
        qk_rope_head_dim, v_head_dim, qk_head_dim (= nope + rope).
    DSA indexer (glm_moe_dsa, deepseek_v32; index_n_heads == 0 elsewhere):
        index_n_heads, index_head_dim, index_topk, indexer_types (per main layer, "full" or
        "shared"; shared layers carry no indexer weights).
    MoE:
        n_routed_experts (E), n_shared_experts, num_experts_per_tok (k), n_group, topk_group,
        routed_scaling_factor, norm_topk_prob, scoring_func, topk_method,
        first_k_dense_replace, mlp_layer_types (per main layer, "dense" or "sparse").
    MTP:
        num_nextn_predict_layers; mtp_has_copies: whether each MTP layer stores its own
        ``embed_tokens`` and ``shared_head.head`` (DeepSeek-V3, GLM-4.5 yes; GLM-4.6/4.7 no).
    RoPE:
        rope_parameters (normalised dict: rope_type, rope_theta, optional yarn keys,
        partial_rotary_factor), rope_interleave, indexer_rope_interleave.
    Other:
        rms_norm_eps, max_position_embeddings, tie_word_embeddings, dtype (checkpoint dtype
        name, "bfloat16"), quantization (QuantConfig or None), config (the raw dict).
    """

    family: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    moe_intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    attention: str
    attention_bias: bool = False
    use_qk_norm: bool = False
    q_lora_rank: int | None = None
    kv_lora_rank: int = 0
    qk_nope_head_dim: int = 0
    qk_rope_head_dim: int = 0
    v_head_dim: int = 0
    qk_head_dim: int = 0
    index_n_heads: int = 0
    index_head_dim: int = 0
    index_topk: int = 0
    indexer_types: list[str] = field(default_factory=list)
    n_routed_experts: int = 0
    n_shared_experts: int = 0
    num_experts_per_tok: int = 0
    n_group: int = 1
    topk_group: int = 1
    routed_scaling_factor: float = 1.0
    norm_topk_prob: bool = True
    scoring_func: str = "sigmoid"
    topk_method: str = "noaux_tc"
    first_k_dense_replace: int = 0
    mlp_layer_types: list[str] = field(default_factory=list)
    num_nextn_predict_layers: int = 0
    mtp_has_copies: bool = True
    rope_parameters: dict[str, Any] = field(default_factory=dict)
    rope_interleave: bool = False
    indexer_rope_interleave: bool = False
    rms_norm_eps: float = 1e-6
    max_position_embeddings: int = 0
    tie_word_embeddings: bool = False
    dtype: str = "bfloat16"
    quantization: QuantConfig | None = None
    config: dict[str, Any] = field(default_factory=dict, repr=False)

    # ---- derived views -------------------------------------------------------------------

    @property
    def is_mla(self) -> bool:
        return self.attention == "mla"

    @property
    def has_indexer(self) -> bool:
        return self.index_n_heads > 0

    @property
    def mtp_layers(self) -> list[int]:
        """Layer indices of the MTP (next-n) layers: ``num_hidden_layers`` onwards."""
        return list(range(self.num_hidden_layers, self.num_hidden_layers + self.num_nextn_predict_layers))

    def is_moe_layer(self, layer: int) -> bool:
        """MoE block on ``layer``; MTP layers are always MoE layers."""
        if layer >= self.num_hidden_layers:
            return self.n_routed_experts > 0
        return self.mlp_layer_types[layer] == "sparse"

    def layer_has_indexer(self, layer: int) -> bool:
        """Whether ``layer`` carries its own DSA indexer weights (MTP layers: yes)."""
        if not self.has_indexer:
            return False
        if layer >= self.num_hidden_layers:
            return True
        return self.indexer_types[layer] == "full"

    @property
    def num_moe_layers(self) -> int:
        return sum(1 for t in self.mlp_layer_types if t == "sparse")

    @property
    def fp8_block(self) -> tuple[int, int] | None:
        """(rows, cols) of the FP8 scale blocks when the checkpoint is block-FP8, else None."""
        q = self.quantization
        return q.block_size if q is not None and q.is_block_fp8 else None

    # ---- construction --------------------------------------------------------------------

    @classmethod
    def from_config(cls, cfg: dict[str, Any], *, source: str = "config.json") -> ModelArgs:
        """Build from a ``config.json`` dict; ``source`` names the file in error messages."""
        if not isinstance(cfg, dict):
            raise CheckpointError(f"{source} is not a JSON object", fix="point at the model's config.json")
        family = cfg.get("model_type")
        if family not in FAMILIES:
            raise CheckpointError(
                f"{source}: model_type {family!r} is not supported",
                fix=f"use a checkpoint of one of: {', '.join(FAMILIES)}",
            )
        d = dict(_DEFAULTS[family])
        d.update({k: v for k, v in cfg.items() if v is not None or k == "q_lora_rank"})
        # transformers' attribute_map aliases
        if "num_mtp_layers" in cfg and "num_nextn_predict_layers" not in cfg:
            d["num_nextn_predict_layers"] = cfg["num_mtp_layers"]
        if "num_experts" in cfg and cfg["num_experts"] is not None:
            d["n_routed_experts"] = cfg["num_experts"]
        try:
            return cls._build(family, d, cfg, source)
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointError(f"{source}: invalid value ({err})", fix="check the config against the published one") from err

    @classmethod
    def _build(cls, family: str, d: dict[str, Any], raw: dict[str, Any], source: str) -> ModelArgs:
        def integer(key: str, minimum: int = 0) -> int:
            value = d.get(key)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise CheckpointError(f"{source}: {key} must be an integer >= {minimum}, got {value!r}")
            return value

        layers = integer("num_hidden_layers", 1)
        heads = integer("num_attention_heads", 1)
        kv_heads = d.get("num_key_value_heads") or heads
        mla = family in MLA_FAMILIES
        hidden = integer("hidden_size", 1)

        mlp_types = d.get("mlp_layer_types")
        if mlp_types is None:
            n_dense = min(integer("first_k_dense_replace"), layers)
            mlp_types = ["dense"] * n_dense + ["sparse"] * (layers - n_dense)
        mlp_types = list(mlp_types)
        if len(mlp_types) != layers or set(mlp_types) - {"dense", "sparse"}:
            raise CheckpointError(f"{source}: mlp_layer_types must list 'dense'/'sparse' for each of {layers} layers")

        indexer_types: list[str] = []
        if family in DSA_FAMILIES:
            indexer_types = _indexer_types(family, d, layers)
            if len(indexer_types) != layers or set(indexer_types) - {"full", "shared"}:
                raise CheckpointError(f"{source}: indexer_types must list 'full'/'shared' for each of {layers} layers")

        if mla:
            nope, rope, v = integer("qk_nope_head_dim"), integer("qk_rope_head_dim"), integer("v_head_dim")
            head_dim = rope  # transformers sets head_dim = qk_rope_head_dim for MLA configs
        else:
            nope = rope = v = 0
            head_dim = d.get("head_dim") or hidden // heads

        quant = _quant_config(raw.get("quantization_config"), source)
        dtype = raw.get("dtype") or raw.get("torch_dtype") or "bfloat16"
        return cls(
            family=family,
            vocab_size=integer("vocab_size", 1),
            hidden_size=hidden,
            intermediate_size=integer("intermediate_size"),
            moe_intermediate_size=integer("moe_intermediate_size"),
            num_hidden_layers=layers,
            num_attention_heads=heads,
            num_key_value_heads=int(kv_heads),
            head_dim=int(head_dim),
            attention="mla" if mla else "gqa",
            attention_bias=bool(d.get("attention_bias", False)),
            use_qk_norm=bool(d.get("use_qk_norm", False)) and not mla,
            q_lora_rank=d.get("q_lora_rank") if mla else None,
            kv_lora_rank=integer("kv_lora_rank") if mla else 0,
            qk_nope_head_dim=nope,
            qk_rope_head_dim=rope,
            v_head_dim=v,
            qk_head_dim=nope + rope,
            index_n_heads=integer("index_n_heads") if family in DSA_FAMILIES else 0,
            index_head_dim=integer("index_head_dim") if family in DSA_FAMILIES else 0,
            index_topk=integer("index_topk") if family in DSA_FAMILIES else 0,
            indexer_types=indexer_types,
            n_routed_experts=integer("n_routed_experts"),
            n_shared_experts=integer("n_shared_experts"),
            num_experts_per_tok=integer("num_experts_per_tok"),
            n_group=int(d.get("n_group") or 1),
            topk_group=int(d.get("topk_group") or 1),
            routed_scaling_factor=float(d.get("routed_scaling_factor", 1.0)),
            norm_topk_prob=bool(d.get("norm_topk_prob", True)),
            scoring_func=str(d.get("scoring_func", "sigmoid")),
            topk_method=str(d.get("topk_method", "noaux_tc")),
            first_k_dense_replace=int(d.get("first_k_dense_replace", 0)),
            mlp_layer_types=mlp_types,
            num_nextn_predict_layers=integer("num_nextn_predict_layers"),
            mtp_has_copies=bool(d.get("mtp_has_copies", True)),
            rope_parameters=_rope_parameters(d, family),
            rope_interleave=bool(d.get("rope_interleave", False)),
            indexer_rope_interleave=bool(d.get("indexer_rope_interleave", False)),
            rms_norm_eps=float(d.get("rms_norm_eps", 1e-6)),
            max_position_embeddings=int(d.get("max_position_embeddings", 0)),
            tie_word_embeddings=bool(d.get("tie_word_embeddings", False)),
            dtype=str(dtype),
            quantization=quant,
            config=dict(raw),
        )


def _indexer_types(family: str, d: dict[str, Any], layers: int) -> list[str]:
    """Per-layer indexer mode as transformers' ``GlmMoeDsaConfig.__post_init__`` derives it."""
    if d.get("indexer_types") is not None:
        return list(d["indexer_types"])
    if family != "glm_moe_dsa":
        return ["full"] * layers
    pattern = d.get("index_topk_pattern")
    if pattern is not None:
        return [{"F": "full", "S": "shared"}[c] for c in pattern] if isinstance(pattern, str) else list(pattern)
    freq = max(int(d.get("index_topk_freq", 1)), 1)
    offset = int(d.get("index_skip_topk_offset", 2))
    return ["full" if (max(i - offset + 1, 0) % freq) == 0 else "shared" for i in range(layers)]


def _rope_parameters(d: dict[str, Any], family: str) -> dict[str, Any]:
    """Normalise old (``rope_theta`` + ``rope_scaling``) and new (``rope_parameters``) forms."""
    params = dict(d.get("rope_parameters") or d.get("rope_scaling") or {})
    if "type" in params and "rope_type" not in params:
        params["rope_type"] = params.pop("type")
    params.setdefault("rope_type", "default")
    params.setdefault("rope_theta", float(d.get("rope_theta", 10000.0)))
    prf = d.get("partial_rotary_factor")
    if prf is not None:
        params.setdefault("partial_rotary_factor", float(prf))
    if params["rope_type"] in ("yarn", "llama3", "longrope"):
        params.setdefault("original_max_position_embeddings", d.get("max_position_embeddings"))
    return params


def _quant_config(q: Any, source: str) -> QuantConfig | None:
    if q is None:
        return None
    if not isinstance(q, dict) or "quant_method" not in q:
        raise CheckpointError(f"{source}: quantization_config must be an object with quant_method")
    block = q.get("weight_block_size")
    if block is not None:
        if not (isinstance(block, list | tuple) and len(block) == 2 and all(isinstance(b, int) and b > 0 for b in block)):
            raise CheckpointError(f"{source}: quantization_config.weight_block_size must be two positive integers, got {block!r}")
        block = (int(block[0]), int(block[1]))
    return QuantConfig(
        method=str(q["quant_method"]),
        fmt=q.get("fmt"),
        block_size=block,
        scale_fmt=q.get("scale_fmt"),
        activation_scheme=q.get("activation_scheme"),
        modules_to_not_convert=tuple(q.get("modules_to_not_convert") or ()),
    )


def load_model_args(model_dir: str | Path) -> ModelArgs:
    """Read ``<model_dir>/config.json`` (CheckpointError naming the file when missing/invalid).

    If ``model.safetensors.index.json`` is present, it decides ``mtp_has_copies`` (whether the
    MTP layer stores ``embed_tokens`` / ``shared_head.head`` of its own).
    """
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{path} not found", fix="point at a Hugging Face model directory (one with config.json)")
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path} is not valid JSON", why=str(err), fix="re-download the file") from err
    args = ModelArgs.from_config(cfg, source=str(path))
    index = Path(model_dir) / "model.safetensors.index.json"
    if args.num_nextn_predict_layers and index.is_file():
        try:
            names = json.loads(index.read_text(encoding="utf-8")).get("weight_map", {})
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise CheckpointError(f"{index} is not valid JSON", why=str(err), fix="re-download the file") from err
        mtp = args.num_hidden_layers
        if any(n.startswith(f"model.layers.{mtp}.") for n in names):
            args.mtp_has_copies = f"model.layers.{mtp}.shared_head.head.weight" in names
    return args


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


__all__ = ["FAMILIES", "ModelArgs", "QuantConfig", "load_model_args", "ceil_div"]
