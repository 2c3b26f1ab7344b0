"""The precision policy: which output format each tensor gets. The one rule matcher.

The planner (weight bytes), the converter (what to write) and doctor (output size) all ask
:meth:`PrecisionPolicy.format_of`; nobody else matches precision rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any


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

    @property
    def formats(self) -> set[str]:
        """Every format the policy can produce."""
        return {self.default, *(fmt for _, fmt in self.rules)}

    def __str__(self) -> str:
        rules = ", ".join(f"{m}->{f}" for m, f in self.rules)
        text = f"{self.default} (rules: {rules})" if rules else self.default
        return text + (f", W8A8 scheme {self.w8a8_scheme}" if "w8a8" in self.formats else "")
