"""MindSpore Transformers layout: HF tensors <-> MindSpore tensors, stored-tensor and file
planning, the memory-lean writer, and ``MindSporeSource`` (a MindSpore checkpoint read under HF
names). Convert uses them through ``ascend.interop.mindspore.convert``.

The naming and fused-tensor transforms are data in ``ascend.interop.mindspore.names``; this module
applies them. File and tensor I/O (and the memory notes) are in ``ascend.interop.mindspore.io``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from ascend.checkpoint.safetensors_io import DTYPE_NAMES, SafetensorsDir, TensorInfo
from ascend.errors import CheckpointError, ConvertError, first_names
from ascend.interop.mindspore.io import (
    DEFAULT_MAX_FILE_BYTES,
    file_format,
    list_mindspore,
    read_mindspore,
    require_mindspore,
    write_mindspore,
)
from ascend.interop.mindspore.names import MsRule  # data only, no torch

# ---- the declared transforms (see ascend.interop.mindspore.names) --------------------------


def to_mindspore(rule: MsRule, sources: list[torch.Tensor]) -> torch.Tensor:
    """HF tensors (in ``rule.hf`` order) -> the MindSpore tensor ``rule.ms``.

    The plain definition; ``build_mindspore_tensor`` is the memory-lean twin used for writing."""
    op = rule.op
    if op == "rename":
        return sources[0]
    if op == "interleave":  # gate [I, H], up [I, H] -> [2I, H] rows g0, u0, g1, u1, ...
        gate, up = sources
        return torch.stack((gate, up), dim=1).reshape(2 * gate.shape[0], *gate.shape[1:])
    if op == "experts_fc1":  # E x (gate [I, H], up [I, H]) -> [E*H, 2I]
        w = torch.stack([torch.cat(sources[i:i + 2], dim=0) for i in range(0, len(sources), 2)])  # [E, 2I, H]
        return w.transpose(1, 2).reshape(-1, w.shape[1])
    if op == "experts_fc2":  # E x down [H, I] -> [E*I, H]
        w = torch.stack(sources)  # [E, H, I]
        return w.transpose(1, 2).reshape(-1, w.shape[1])
    if op == "qkv":  # q [Hq*d, ...], k/v [Hkv*d, ...] -> [Hkv, (Hq/Hkv + 2)*d, ...] flattened
        kv, d = rule.params["num_kv_heads"], rule.params["head_dim"]
        q, k, v = (t.reshape(kv, -1, *t.shape[1:]) for t in sources)
        if q.shape[1] != rule.params["num_heads"] // kv * d or k.shape[1] != d:
            raise ConvertError(f"{rule.ms}: q/k/v shapes do not match {rule.params}")
        return torch.cat((q, k, v), dim=1).reshape(-1, *sources[0].shape[1:])
    raise ConvertError(f"internal: rule {rule.ms} has op {op!r}, which has no forward transform")


def hf_views(rule: MsRule, t: torch.Tensor) -> dict[str, torch.Tensor]:
    """The MindSpore tensor ``rule.ms`` -> ``{hf_name: view of t}`` (no copies; exact inverse of
    ``to_mindspore``). For an alias rule, ``t`` is the shared tensor."""
    op, hf = rule.op, rule.hf
    if op in ("rename", "alias"):
        return {hf[0]: t}
    if op == "interleave":
        pairs = t.reshape(t.shape[0] // 2, 2, *t.shape[1:])
        return {hf[0]: pairs[:, 0], hf[1]: pairs[:, 1]}
    if op in ("experts_fc1", "experts_fc2"):
        per_expert = 2 if op == "experts_fc1" else 1
        experts = len(hf) // per_expert
        if t.dim() != 2 or t.shape[0] % experts or t.shape[1] % per_expert:
            raise CheckpointError(f"{rule.ms} has shape {list(t.shape)}, not [{experts} * n, m]", fix="check config.json n_routed_experts")
        w = t.reshape(experts, t.shape[0] // experts, t.shape[1]).transpose(1, 2)  # [E, 2I, H] or [E, H, I]
        out = {}
        for e in range(experts):
            for j, part in enumerate(w[e].chunk(per_expert, dim=0)):
                out[hf[e * per_expert + j]] = part
        return out
    if op == "qkv":
        kv, d = rule.params["num_kv_heads"], rule.params["head_dim"]
        qd = rule.params["num_heads"] // kv * d
        if t.shape[0] != kv * (qd + 2 * d):
            raise CheckpointError(f"{rule.ms} has {t.shape[0]} rows, config.json implies {kv * (qd + 2 * d)}")
        g = t.reshape(kv, qd + 2 * d, *t.shape[1:])
        rest = t.shape[1:]
        return {
            hf[0]: g[:, :qd].reshape(-1, *rest),
            hf[1]: g[:, qd:qd + d].reshape(-1, *rest),
            hf[2]: g[:, qd + d:].reshape(-1, *rest),
        }
    raise ConvertError(f"internal: rule {rule.ms} has op {op!r}, which has no inverse transform")


def from_mindspore(rule: MsRule, t: torch.Tensor) -> dict[str, torch.Tensor]:
    """Like ``hf_views`` but every HF tensor contiguous (ready to write)."""
    return {name: v.contiguous() for name, v in hf_views(rule, t).items()}


def hf_shapes(rule: MsRule, shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    """HF shapes of ``rule`` given the MindSpore tensor's shape, without reading data."""
    return {name: tuple(v.shape) for name, v in hf_views(rule, torch.empty(shape, dtype=torch.int8, device="meta")).items()}


# ---- stored tensors, files and the converter's source ---------------------------------


def _same_bytes(sd: SafetensorsDir, a: str, b: str, chunk_rows: int = 4096) -> bool:
    ia, ib = sd.tensors[a], sd.tensors[b]
    if ia.dtype != ib.dtype or ia.shape != ib.shape:
        return False
    rows = ia.shape[0] if ia.shape else 1
    for start in range(0, rows, chunk_rows):
        stop = min(start + chunk_rows, rows) if ia.shape else None
        if not torch.equal(sd.read_rows(a, start, stop).reshape(-1).view(torch.uint8),
                           sd.read_rows(b, start, stop).reshape(-1).view(torch.uint8)):
            return False
    return True


def _config_dir(src: Path, config: str | Path | None) -> Path:
    """Where the HF ``config.json`` of a MindSpore checkpoint is: ``config`` (file or directory)
    or the checkpoint's own directory."""
    path = Path(config) if config is not None else (src if src.is_dir() else src.parent)
    return path.parent if path.is_file() else path


def resolve_mindspore_names(listing: Mapping[str, Any], args: Any, where: str) -> tuple[dict[str, MsRule], dict[str, list[str]], list[str]]:
    """Match the MindSpore tensor names of a checkpoint against ``args``' naming table.

    Returns ``(rules by stored MindSpore name, {shared MindSpore name: [HF copy names]},
    skipped training-state names)``. Raises ConvertError for names the table does not know and
    CheckpointError for tensors the table needs but the checkpoint lacks.
    """
    from ascend.interop.mindspore.names import (
        aliases_of,
        is_legacy_name,
        is_training_state,
        mindspore_rules,
        ms_name_map,
        own_copy_rules,
    )

    mtp = any(name.startswith("mtp.layers.") for name in listing)
    rules = mindspore_rules(args, mtp=mtp)
    by_ms = ms_name_map(rules)
    own = {name: rule for name, rule in own_copy_rules(rules).items() if name in listing}
    required = set(by_ms)
    by_ms.update(own)
    skipped = [n for n in listing if n not in by_ms and is_training_state(n)]
    unknown = [n for n in listing if n not in by_ms and n not in skipped]
    legacy = [n for n in unknown if is_legacy_name(n)]
    if legacy:
        raise ConvertError(
            f"{where} uses MindSpore Transformers' older research/deepseek3 layout (e.g. {legacy[0]}), which is not supported",
            fix="convert it to Hugging Face with MindSpore Transformers' research/deepseek3/convert_reversed.py, "
                "or re-save it from a current (Mcore) MindSpore Transformers model",
        )
    if unknown:
        raise ConvertError(
            f"{len(unknown)} tensor(s) of {where} are not {args.family} MindSpore Transformers parameters",
            why=first_names(unknown),
            fix="check that config.json describes this checkpoint (layers, experts, MTP)",
        )
    missing = [n for n in required if n not in listing]
    if missing:
        raise CheckpointError(
            f"{where} lacks {len(missing)} MindSpore tensor(s) of {args.family}",
            why=first_names(missing),
            fix="check config.json (layers, experts, MTP) or merge a distributed checkpoint first",
        )
    own_hf = {name for rule in own.values() for name in rule.hf}
    aliases = {ms: [h for h in copies if h not in own_hf] for ms, copies in aliases_of(rules).items()}
    return by_ms, {ms: c for ms, c in aliases.items() if c}, skipped



def stored_mindspore_rules(src: SafetensorsDir, rules: list[MsRule]) -> list[MsRule]:
    """The MindSpore tensors to write for HF source ``src``, in order: every non-alias rule, plus
    (at the end) the MTP copies that differ from the tensor MindSpore Transformers shares them
    with, under their own names. Identical copies are not stored (MindSpore Transformers'
    layout); different ones must be, or the round trip would not be exact."""
    from ascend.interop.mindspore.names import own_copy_rules

    primary = {rule.ms: rule.hf[0] for rule in rules if rule.op == "rename"}
    own = own_copy_rules(rules)
    kept = [own[r.own] for r in rules if r.op == "alias" and not _same_bytes(src, r.hf[0], primary[r.ms])]
    return [r for r in rules if r.op != "alias"] + kept


def mindspore_file_name(k: int, n: int, format: str = "safetensors") -> str:
    """``model-0000k-of-0000n.<format>``, as MindSpore Transformers' unified checkpoints."""
    return f"model-{k:05d}-of-{n:05d}.{format}"


def plan_mindspore_files(rules: list[MsRule], hf_nbytes: Callable[[str], int], max_file_bytes: int = DEFAULT_MAX_FILE_BYTES) -> list[list[MsRule]]:
    """Pack stored MindSpore tensors (rules, in order) into files of at most ``max_file_bytes``;
    a tensor never splits (one larger than the cap gets a file of its own)."""
    groups: list[list[MsRule]] = [[]]
    size = 0
    for rule in rules:
        if rule.op == "alias":
            continue
        nbytes = sum(hf_nbytes(name) for name in rule.hf)
        if groups[-1] and size + nbytes > max_file_bytes:
            groups.append([])
            size = 0
        groups[-1].append(rule)
        size += nbytes
    return [g for g in groups if g]


def write_mindspore_file(path: Path, rules: list[MsRule], read_hf: Callable[[str], torch.Tensor], format: str = "safetensors") -> tuple[int, str]:
    """Build each rule's MindSpore tensor from ``read_hf(hf_name)`` (whole BF16/F32 tensors) and
    write them as one MindSpore file (``write_mindspore``). Returns (size, sha256)."""
    tensors = {rule.ms: build_mindspore_tensor(rule, read_hf) for rule in rules}
    return write_mindspore(path, tensors, format)


def build_mindspore_tensor(rule: MsRule, read_hf: Callable[[str], torch.Tensor]) -> torch.Tensor:
    """``to_mindspore`` reading sources on demand: the stacked expert tensors are filled one
    expert at a time, so the peak is the output plus one expert (not output + all sources +
    a stacked copy: 15 GB instead of ~45 GB for a DeepSeek-V3 ``experts.weight1``)."""
    if rule.op not in ("experts_fc1", "experts_fc2"):
        return to_mindspore(rule, [read_hf(name) for name in rule.hf])
    per_expert = 2 if rule.op == "experts_fc1" else 1
    experts = len(rule.hf) // per_expert
    out = None
    for e in range(experts):
        parts = [read_hf(name) for name in rule.hf[e * per_expert:(e + 1) * per_expert]]
        block = torch.cat(parts, dim=0).T  # [H, 2I] or [I, H]
        if out is None:
            out = torch.empty((experts * block.shape[0], block.shape[1]), dtype=block.dtype)
        out[e * block.shape[0]:(e + 1) * block.shape[0]] = block
    return out


class MindSporeSource:
    """A MindSpore Transformers checkpoint seen through Hugging Face names.

    Offers the read interface of ``SafetensorsDir`` (``dir``, ``tensors`` {HF name:
    TensorInfo}, ``read_rows``, ``read``, ``__contains__``, ``fingerprint``, ``close``), so the
    converter can plan and run any output from a MindSpore source. HF tensors are views of the
    MindSpore tensor they come from; the last MindSpore tensor read (a whole ``.ckpt`` file) is
    cached, so reading the experts of one layer in order loads ``experts.weight1`` once.
    ``config``: the model's HF config.json or its directory (default: the checkpoint's).
    """

    def __init__(self, path: str | Path, config: str | Path | None = None):
        from ascend.models.args import load_model_args

        require_mindspore()
        self.path = Path(path)
        self.dir = self.path if self.path.is_dir() else self.path.parent
        self.config_dir = _config_dir(self.path, config)
        self.args = load_model_args(self.config_dir)
        self.listing = list_mindspore(self.path)
        by_ms, aliases, self.skipped = resolve_mindspore_names(self.listing, self.args, str(self.path))
        self._origin: dict[str, tuple[MsRule, str]] = {}
        self.tensors: dict[str, TensorInfo] = {}
        for ms_name, rule in by_ms.items():
            info = self.listing[ms_name]
            pairs = [(rule, hf_shapes(rule, info.shape))]
            pairs += [(MsRule(ms_name, (copy,), "alias"), {copy: info.shape}) for copy in aliases.get(ms_name, ())]
            for r, shapes in pairs:
                for name, shape in shapes.items():
                    nbytes = info.dtype.itemsize * int(torch.Size(shape).numel())
                    self.tensors[name] = TensorInfo(name, DTYPE_NAMES[info.dtype], tuple(shape), str(info.path), 0, nbytes)
                    self._origin[name] = (r, ms_name)
        self._cached: tuple[str, torch.Tensor] | None = None
        self._ckpt: tuple[Path, dict[str, torch.Tensor]] | None = None

    def __contains__(self, name: str) -> bool:
        return name in self.tensors

    def _ms_tensor(self, ms_name: str) -> torch.Tensor:
        if self._cached is not None and self._cached[0] == ms_name:
            return self._cached[1]
        info = self.listing[ms_name]
        if file_format(info.path) == "ckpt":  # MindSpore parses .ckpt whole: keep the file
            if self._ckpt is None or self._ckpt[0] != info.path:
                self._ckpt = None
                self._ckpt = (info.path, dict(read_mindspore(info.path)))
            t = self._ckpt[1][ms_name]
        else:
            self._cached = None
            ((_, t),) = list(read_mindspore(info.path, [ms_name]))
        self._cached = (ms_name, t)
        return t

    def read_rows(self, name: str, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Rows ``[start, stop)`` of HF tensor ``name`` (all of a 0-/1-D tensor if stop is None)."""
        rule, ms_name = self._origin[name]
        view = hf_views(rule, self._ms_tensor(ms_name))[name]
        if view.dim() == 0:
            return view.clone()
        return view[start:view.shape[0] if stop is None else stop].contiguous()

    def read(self, name: str) -> torch.Tensor:
        return self.read_rows(name)

    def fingerprint(self) -> str:
        """sha256 over MindSpore names, dtypes, shapes, file names and sizes, and config.json."""
        import hashlib

        h = hashlib.sha256()
        for name, info in self.listing.items():
            h.update(f"{name}:{info.dtype}:{list(info.shape)}:{info.path.name}:{info.path.stat().st_size};".encode())
        h.update((self.config_dir / "config.json").read_bytes())
        return h.hexdigest()

    def close(self) -> None:
        self._cached = None
        self._ckpt = None
