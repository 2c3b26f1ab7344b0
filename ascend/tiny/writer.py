"""``ascend tiny``: write a tiny random checkpoint of a family in the real Hugging Face layout.

Output (deterministic for a seed; written to a temporary dir and renamed into place):

- ``config.json`` (``ascend.tiny.configs.tiny_config``), ``generation_config.json``;
- weights: every tensor ``tensor_specs`` lists (MTP layer included unless ``mtp=False``), with the
  published names, shapes and dtypes (BF16; router bias F32), split over several
  ``model-0000k-of-0000n.safetensors`` files (one per decoder layer plus one for the globals)
  with ``model.safetensors.index.json``;
- ``fp8=True``: every quantizable projection as ``float8_e4m3fn`` plus its float32
  ``weight_scale_inv`` ``[ceil(out/128), ceil(in/128)]`` (partial edge blocks included; power-of-two
  "ue8m0" scales for DeepSeek-V3.2 as its config says), and the ``quantization_config``;
- a real tokenizer (``tokenizer.json``: byte-level BPE trained here, in-process, on a fixed text,
  plus the family's special tokens at their tiny ids), ``tokenizer_config.json`` and
  ``special_tokens_map.json``, and the chat template (``chat_templates.py``) in
  ``tokenizer_config.json`` and ``chat_template.jinja``.

Weights are drawn from one ``torch.Generator`` seeded with ``seed``, in ``tensor_specs`` order:
projections ~ N(0, 1/fan_in), embeddings ~ N(0, 1), norm weights ~ 1 + N(0, 0.1²), biases and
the router correction bias ~ N(0, 0.1²); the MTP layer's ``embed_tokens`` / ``shared_head.head``
are copies of the main embedding and head, as published. The DSA indexer's ``weights_proj`` is drawn positive
(|N|): with mixed signs, random tiny weights give many exactly tied index scores, where top-k order
is implementation-defined, so tests against transformers would compare tie-breaking, not models.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from ascend.fileio import atomic_dir
from ascend.models.args import ModelArgs
from ascend.models.tensors import tensor_specs
from ascend.tiny.chat_templates import TEMPLATES
from ascend.tiny.configs import (
    DEEPSEEK_SPECIAL_TOKENS,
    GLM_SPECIAL_TOKENS,
    TINY_VOCAB_SIZE,
    special_tokens,
    tiny_config,
)

_DTYPES = {"bf16": torch.bfloat16, "f32": torch.float32, "f16": torch.float16}


def write_tiny_checkpoint(
    out_dir: str | Path,
    family: str,
    *,
    fp8: bool = False,
    seed: int = 0,
    layers: int | None = None,
    experts: int | None = None,
    mtp: bool = True,
    overwrite: bool = False,
    mtp_copies: bool = True,
    scales_apart: bool = False,
    overrides: dict | None = None,
) -> Path:
    """Write the checkpoint to ``out_dir`` (must not exist unless ``overwrite``); returns it.

    Variations the tests need (the defaults are ``ascend tiny``'s layout):
    ``mtp_copies=False``: the MTP layer without its own ``embed_tokens`` / ``shared_head.head``
    (as GLM-4.6 ships it); ``scales_apart=True``: every FP8 ``_scale_inv`` in a last file of its
    own, so no weight shares a file with its scale (readers must pair them across files);
    ``overrides``: config keys replacing the tiny ones (e.g. other sizes).
    """
    out = Path(out_dir)
    if out.exists() and not overwrite:
        from ascend.errors import AscendError

        raise AscendError(f"{out} already exists", fix="choose a new directory or pass --overwrite")
    cfg = {**tiny_config(family, layers=layers, experts=experts, mtp=mtp, fp8=fp8), **(overrides or {})}
    args = ModelArgs.from_config({k: v for k, v in cfg.items() if k != "quantization_config"})
    tensors = _draw_weights(args, seed, mtp, mtp_copies)
    if fp8:
        tensors = _quantize(tensors, args, scale_fmt=cfg["quantization_config"].get("scale_fmt"))

    with atomic_dir(out) as tmp:
        tmp.mkdir()
        _write_weights(tmp, tensors, scales_apart)
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
        (tmp / "generation_config.json").write_text(json.dumps(_generation_config(cfg), indent=2) + "\n")
        _write_tokenizer(tmp, family)
    return out


# --- weights ----------------------------------------------------------------------------------
def _draw_weights(args: ModelArgs, seed: int, mtp: bool, mtp_copies: bool) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for spec in tensor_specs(args, mtp=mtp):
        shape, name = spec.shape, spec.name
        if spec.mtp and not mtp_copies and spec.component in ("embed", "head"):
            continue
        noise = torch.randn(shape, generator=gen)
        if name.endswith("e_score_correction_bias") or name.endswith(".bias") and len(shape) == 1 and "norm" not in name:
            value = 0.1 * noise
        elif len(shape) == 1:  # norm weights (RMSNorm, LayerNorm weight); LayerNorm bias below
            value = 1.0 + 0.1 * noise
        elif spec.component == "embed":
            value = noise
        else:
            value = noise * shape[1] ** -0.5
        if name.endswith("k_norm.bias") and "indexer" in name:
            value = 0.1 * noise
        if name.endswith("indexer.weights_proj.weight"):
            value = value.abs()
        if spec.mtp and name.endswith(".embed_tokens.weight"):  # the MTP copies equal the main
            value = out["model.embed_tokens.weight"].clone()  # tensors (DeepSeek README_WEIGHTS.md)
        if spec.mtp and name.endswith(".shared_head.head.weight"):
            value = out["lm_head.weight"].clone()
        out[name] = value.to(_DTYPES.get(spec.dtype, torch.bfloat16))
    return out


def _quantize(tensors: dict[str, torch.Tensor], args: ModelArgs, scale_fmt: str | None) -> dict[str, torch.Tensor]:
    from ascend.checkpoint.fp8 import quantize_fp8_block

    quantizable = {s.name for s in tensor_specs(args, mtp=True) if s.quantizable}
    out: dict[str, torch.Tensor] = {}
    for name, t in tensors.items():
        if name in quantizable:
            w, scale = quantize_fp8_block(t.float(), block=(128, 128), scale_fmt=scale_fmt)
            out[name], out[f"{name}_scale_inv"] = w, scale.float()
        else:
            out[name] = t
    return out


def _write_weights(dir_: Path, tensors: dict[str, torch.Tensor], scales_apart: bool) -> None:
    """One file for the global tensors and one per decoder layer (MTP included); with
    ``scales_apart`` the FP8 scales go to one more file, last."""
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for name, t in tensors.items():
        if scales_apart and name.endswith("_scale_inv"):
            key = "scales"
        else:
            key = name.split(".")[2] if name.startswith("model.layers.") else "global"
        groups.setdefault(key, {})[name] = t.contiguous()
    layers = sorted((k for k in groups if k not in ("global", "scales")), key=int)
    order = ["global", *layers] + (["scales"] if "scales" in groups else [])
    n = len(order)
    weight_map, total = {}, 0
    for i, key in enumerate(order, start=1):
        file = f"model-{i:05d}-of-{n:05d}.safetensors"
        save_file(groups[key], str(dir_ / file), metadata={"format": "pt"})
        for name, t in groups[key].items():
            weight_map[name] = file
            total += t.numel() * t.element_size()
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (dir_ / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


def _generation_config(cfg: dict) -> dict:
    gen = {"_from_model_config": False, "eos_token_id": cfg["eos_token_id"], "do_sample": True}
    if cfg.get("bos_token_id") is not None:
        gen["bos_token_id"] = cfg["bos_token_id"]
    if cfg.get("pad_token_id") is not None:
        gen["pad_token_id"] = cfg["pad_token_id"]
    if cfg["model_type"].startswith("deepseek"):
        gen.update(temperature=0.6, top_p=0.95)
    else:
        gen.update(temperature=1.0, top_p=0.95)
    return gen


# --- tokenizer --------------------------------------------------------------------------------
_WORDS = (
    "the of and to in is you that it he was for on are as with his they at be this have from or one had by "
    "word but not what all were we when your can said there use an each which she do how their if will up "
    "other about out many then them these so some her would make like him into time has look two more write "
    "go see number no way could people my than first water been call who oil its now find long down day did "
    "get come made may part model token tensor layer expert router attention cache decode prefill sequence "
    "batch rank shard weight scale block norm head vocab logits hidden query key value rotary position "
    "weather city temperature search result function call tool name arguments json true false null "
    "hello world thanks please answer question think reason step because therefore result final "
    "def return import class self print for while range len list dict str int float none async await "
    "北京 上海 天气 你好 谢谢 模型 问题 回答"
).split()


def _corpus() -> list[str]:
    """A fixed training text: sentences from a small word list, digits, code and JSON fragments."""
    gen = torch.Generator().manual_seed(1234)
    lines = []
    for _ in range(3000):
        n = int(torch.randint(4, 16, (1,), generator=gen))
        idx = torch.randint(0, len(_WORDS), (n,), generator=gen).tolist()
        words = [_WORDS[i] for i in idx]
        if idx[0] % 3 == 0:
            words[0] = words[0].capitalize()
        lines.append(" ".join(words) + (". " if idx[-1] % 2 else "? ") + str(idx[0] * 37 % 1000))
    lines += ['{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}'] * 50
    lines += ["def forward(self, x):\n    return self.head(self.norm(x))\n"] * 50
    return lines


def build_tokenizer(family: str):
    """The tiny byte-level BPE tokenizer of ``family`` (a ``tokenizers.Tokenizer``)."""
    from tokenizers import Tokenizer

    return Tokenizer.from_str(_trained_tokenizer_json(family))


@functools.lru_cache(maxsize=None)
def _trained_tokenizer_json(family: str) -> str:
    """Train once per process (deterministic: same corpus, same merges)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    specials = special_tokens(family)
    glm = family.startswith("glm")
    names = GLM_SPECIAL_TOKENS if glm else DEEPSEEK_SPECIAL_TOKENS
    bpe_size = min(specials.values()) if glm else TINY_VOCAB_SIZE  # GLM: BPE below the specials
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=bpe_size,
        special_tokens=[] if glm else list(names),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    if glm:
        if tok.get_vocab_size() != bpe_size:
            raise RuntimeError(f"tiny BPE has {tok.get_vocab_size()} tokens, expected {bpe_size}")
        tok.add_special_tokens(list(names))
    for text, want in specials.items():
        got = tok.token_to_id(text)
        if got != want:
            raise RuntimeError(f"special token {text} got id {got}, expected {want}")
    if tok.get_vocab_size() > TINY_VOCAB_SIZE:
        raise RuntimeError(f"tokenizer has {tok.get_vocab_size()} tokens > vocab {TINY_VOCAB_SIZE}")
    return tok.to_str()


def _write_tokenizer(dir_: Path, family: str) -> None:
    tok = build_tokenizer(family)
    tok.save(str(dir_ / "tokenizer.json"))
    glm = family.startswith("glm")
    names = GLM_SPECIAL_TOKENS if glm else DEEPSEEK_SPECIAL_TOKENS
    if glm:
        eos, pad, bos = "<|endoftext|>", "<|endoftext|>", None
    else:
        eos, pad, bos = "<｜end▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜begin▁of▁sentence｜>"
    template = TEMPLATES[family]
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": 2048,
        "clean_up_tokenization_spaces": False,
        "add_bos_token": False,
        "add_eos_token": False,
        "bos_token": bos,
        "eos_token": eos,
        "pad_token": pad,
        "additional_special_tokens": [t for t in names if t not in (bos, eos, pad)],
        "chat_template": template,
    }
    (dir_ / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    smap = {"eos_token": eos, "pad_token": pad, **({"bos_token": bos} if bos else {})}
    (dir_ / "special_tokens_map.json").write_text(json.dumps(smap, indent=2, ensure_ascii=False) + "\n")
    (dir_ / "chat_template.jinja").write_text(template)
