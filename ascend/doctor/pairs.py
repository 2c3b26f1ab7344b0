"""Known-good torch_npu releases: the package version, the torch it is built for, and its CANN.

Source: Ascend/pytorch README, "TorchNPU Version | TorchNPU Package Version | PyTorch Version |
CANN Version" table (active versions; read through the project's search tool, 2026). Rule from
the same README: a torch_npu package ``X.Y.Z[.postN]`` runs only on torch ``X.Y.Z``.
"""

from __future__ import annotations

import re

SOURCE = "Ascend/pytorch README (TorchNPU / PyTorch / CANN version table)"

# torch_npu package version -> (torch version, CANN version)
TORCH_NPU_RELEASES: dict[str, tuple[str, str]] = {
    "2.12.0.post2": ("2.12.0", "9.1.X"),
    "2.11.0.post2": ("2.11.0", "9.1.X"),
    "2.10.0.post6": ("2.10.0", "9.1.X"),
    "2.9.0.post8": ("2.9.0", "9.1.X"),
    "2.7.1.post10": ("2.7.1", "9.1.X"),
    "2.12.0": ("2.12.0", "9.1.0"),
    "2.11.0": ("2.11.0", "9.1.0"),
    "2.10.0.post4": ("2.10.0", "9.1.0"),
    "2.9.0.post6": ("2.9.0", "9.1.0"),
    "2.7.1.post8": ("2.7.1", "9.1.0"),
    "2.10.0": ("2.10.0", "9.0.0"),
    "2.9.0.post2": ("2.9.0", "9.0.0"),
    "2.8.0.post4": ("2.8.0", "9.0.0"),
    "2.7.1.post4": ("2.7.1", "9.0.0"),
    "2.9.0": ("2.9.0", "8.5.0"),
    "2.8.0.post2": ("2.8.0", "8.5.0"),
    "2.7.1.post2": ("2.7.1", "8.5.0"),
    "2.6.0.post5": ("2.6.0", "8.5.0"),
    "2.8.0": ("2.8.0", "8.3.RC1"),
    "2.7.1": ("2.7.1", "8.3.RC1"),
    "2.6.0.post3": ("2.6.0", "8.3.RC1"),
    "2.1.0.post17": ("2.1.0", "8.3.RC1"),
    "2.6.0": ("2.6.0", "8.2.RC1"),
    "2.5.1.post1": ("2.5.1", "8.2.RC1"),
    "2.1.0.post13": ("2.1.0", "8.2.RC1"),
    "2.5.1": ("2.5.1", "8.1.RC1"),
    "2.4.0.post4": ("2.4.0", "8.1.RC1"),
    "2.3.1.post6": ("2.3.1", "8.1.RC1"),
    "2.1.0.post12": ("2.1.0", "8.1.RC1"),
    "2.4.0.post2": ("2.4.0", "8.0.0"),
    "2.3.1.post4": ("2.3.1", "8.0.0"),
    "2.1.0.post10": ("2.1.0", "8.0.0"),
}


def base_version(version: str) -> str:
    """'2.5.1+cpu' -> '2.5.1'; '2.5.1.post1' / '2.7.1.dev20250724' / '2.1.0rc1' -> the X.Y.Z part."""
    m = re.match(r"(\d+\.\d+\.\d+)", version.strip())
    return m.group(1) if m else version.strip()


def torch_for(torch_npu_version: str) -> str:
    """The torch version a torch_npu build needs (table first, else its X.Y.Z prefix)."""
    known = TORCH_NPU_RELEASES.get(torch_npu_version)
    return known[0] if known else base_version(torch_npu_version)


def cann_for(torch_npu_version: str) -> str | None:
    known = TORCH_NPU_RELEASES.get(torch_npu_version)
    return known[1] if known else None


def releases_for_cann(cann_version: str, torch_version: str | None = None) -> list[str]:
    """torch_npu packages released for a CANN version ('9.1.X' covers 9.1.*), optionally only
    those built for ``torch_version``."""
    return [
        pkg
        for pkg, (torch, cann) in TORCH_NPU_RELEASES.items()
        if same_cann_release(cann, cann_version) and (torch_version is None or torch == base_version(torch_version))
    ]


def same_cann_release(a: str, b: str) -> bool:
    """'8.2.RC1' vs '8.2.RC1' -> True; '9.1.X' matches any 9.1.*."""
    a, b = a.upper(), b.upper()
    if a.endswith(".X"):
        return b.startswith(a[:-1])
    if b.endswith(".X"):
        return a.startswith(b[:-1])
    return a == b
