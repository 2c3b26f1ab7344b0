"""The precision policy: which output format each tensor gets. The one rule matcher.

The planner (weight bytes), the converter (what to write) and doctor (output size) all ask
:meth:`PrecisionPolicy.written_format` (the rules, refined per tensor by the family's W8A8 scheme);
nobody else matches precision rules or applies a scheme. :func:`written_specs` adds the tensors
calibration writes beside the table's (the anti-outlier norm biases).
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

# Written formats besides the rule formats (bf16, fp8, w8a8 = W8A8_DYNAMIC):
W8A8_STATIC = "w8a8_static"  # a static W8A8 linear (int8 weight, quant_bias, input_scale/offset, deq_scale)
FOLDED_BIAS = "f32_folded"  # a static linear's bias: folded into quant_bias and written as fp32 ``P.bias``
COMPUTE_FORMAT = {W8A8_STATIC: "w8a8", FOLDED_BIAS: "bf16"}  # written format -> the format a chip computes in


@dataclass(frozen=True)
class PrecisionPolicy:
    """``convert.precision``: rules are (glob on tensor names, format); the first match wins.

    Tensors the model table marks non-quantizable (norms, router, embeddings, ...) stay BF16
    (or their native fp32) whatever the rules say; so do tensors that are not 2-D.
    """

    default: str = "bf16"
    rules: tuple[tuple[str, str], ...] = ()
    w8a8_scheme: str = "w8a8"  # what w8a8 makes static / dynamic / float per family (models.quant_schemes)

    @classmethod
    def from_recipe(cls, recipe: Any) -> PrecisionPolicy:
        p = recipe.convert.precision
        return cls(p.default, tuple((r.match, r.format) for r in p.rules), p.w8a8_scheme)

    def format_of(self, name: str, *, quantizable: bool = True) -> str:
        """Output format of tensor ``name``: "bf16" when it is not quantizable, else the first
        matching rule's format, else the default."""
        if not quantizable:
            return "bf16"
        for pattern, fmt in self.rules:
            if fnmatchcase(name, pattern):
                return fmt
        return self.default

    def written_format(self, family: str, spec: Any) -> str:
        """The format the converter writes ``spec`` (a TensorSpec) in: :meth:`format_of`, with
        ``w8a8`` refined by the family's W8A8 scheme (``models.quant_schemes.linear_kind``):
        static -> ``w8a8_static``, dynamic -> ``w8a8``, float -> ``bf16``; the bias of a static
        linear -> ``f32_folded``."""
        from ascend.models.quant_schemes import DYNAMIC, STATIC, linear_kind

        fmt = self.format_of(spec.name, quantizable=spec.quantizable)
        if not spec.quantizable:
            weight = spec.name[: -len(".bias")] + ".weight" if spec.name.endswith("_proj.bias") else None
            if weight is not None and self.format_of(weight) == "w8a8" \
                    and linear_kind(family, self.w8a8_scheme, weight, mtp=spec.mtp) == STATIC:
                return FOLDED_BIAS
            return fmt
        if fmt != "w8a8":
            return fmt
        kind = linear_kind(family, self.w8a8_scheme, spec.name, mtp=spec.mtp)
        return W8A8_STATIC if kind == STATIC else "w8a8" if kind == DYNAMIC else "bf16"

    @property
    def formats(self) -> set[str]:
        """Every format the policy can produce."""
        return {self.default, *(fmt for _, fmt in self.rules)}

    def __str__(self) -> str:
        rules = ", ".join(f"{m}->{f}" for m, f in self.rules)
        text = f"{self.default} (rules: {rules})" if rules else self.default
        return text + (f", W8A8 scheme {self.w8a8_scheme}" if "w8a8" in self.formats else "")


def written_specs(args: Any, policy: PrecisionPolicy, specs: list) -> list[tuple[Any, str]]:
    """(TensorSpec, written format) of every tensor a conversion of ``args`` (ModelArgs) writes,
    from its tensor table ``specs`` (``models.tensor_specs``; source FP8 scales are skipped: each
    output format brings its own). Beside the table's tensors: the ``input_layernorm.bias`` that
    anti-outlier smoothing adds (``ascend.quant.smooth``; GQA attention with biases, i.e. GLM-4.x,
    xLLM's ``ALL_W8A8_ANTI``) in every main layer whose q/k/v are static. It is counted whenever
    the scheme makes them static (smoothing is on by default; with it off this counts
    ``hidden × 2`` B per layer more than is written)."""
    from dataclasses import replace

    out = []
    for spec in specs:
        if spec.scale_of is not None:
            continue
        fmt = policy.written_format(args.family, spec)
        out.append((spec, fmt))
        if (not args.is_mla and args.attention_bias and not spec.mtp
                and spec.name.endswith(".input_layernorm.weight")):
            attn = spec.name[: -len("input_layernorm.weight")] + "self_attn"
            if any(policy.written_format(args.family, replace(spec, name=f"{attn}.{p}_proj.weight", quantizable=True))
                   == W8A8_STATIC for p in "qkv"):
                out.append((replace(spec, name=spec.name[: -len(".weight")] + ".bias"), fmt))
    return out
