"""MindSpore checkpoints (``.ckpt`` and MindSpore safetensors) in and out, bit-exact.

Tensors go through the ``mindspore`` package's own API (``mindspore.load_checkpoint`` /
``mindspore.save_checkpoint``), imported lazily: without the ``mindspore`` extra every entry
point raises one ``BackendUnavailable`` line saying how to install it.

Memory, honestly:

- MindSpore safetensors are read tensor by tensor: ``load_checkpoint(..., choice_func=...)``
  materialises only the chosen names (MindSpore memory-maps the file), so reading holds at most
  ``batch_bytes`` (or one tensor, if larger) at a time. MindSpore's API has no row slices, so a
  single tensor is the floor: DeepSeek-V3's ``mlp.experts.weight1`` is one [256*7168, 4096]
  BF16 tensor, 15 GB.
- ``.ckpt`` is one protobuf message that MindSpore parses whole: reading holds the entire file.
  Prefer MindSpore safetensors for large checkpoints (MindSpore's ``ckpt_to_safetensors``).
- Writing: ``save_checkpoint`` takes whole tensors. Measured (512 MiB BF16 tensor): safetensors
  need about one more copy of the file while serialising, ``.ckpt`` about three; stacked expert
  tensors are built one expert at a time (``layout.build_mindspore_tensor``); files are capped at
  ``max_file_bytes`` (a single larger tensor gets a file of its own).

BF16 has no NumPy dtype of its own, so tensors cross the torch <-> MindSpore boundary as raw
bits: a bf16 torch tensor is viewed as int16, handed to MindSpore and viewed back as
``mindspore.bfloat16`` (and the reverse on reading), so every bit pattern (NaN payloads, -0,
subnormals) survives. MindSpore's own safetensors writer still goes through its NumPy bfloat16
type, which needs NumPy 1.x (MindSpore 2.10 is compiled against NumPy 1.25/1.26).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import torch

from ascend.checkpoint.safetensors_io import DTYPES, file_sha256, read_header
from ascend.errors import BackendUnavailable, CheckpointError, ConvertError
from ascend.fileio import fsync_file, publish

INSTALL_HINT = 'pip install "ascend-recipes[mindspore]"'
FORMATS = ("safetensors", "ckpt")
NAME_MAP_FILE = "param_name_map.json"  # MindSpore Transformers' {param name: file} map
DEFAULT_MAX_FILE_BYTES = 5 * 10**9
DEFAULT_BATCH_BYTES = 1 << 30
SCALE_INV = "_scale_inv"  # block-FP8 partner of a weight in HF checkpoints

# torch dtype -> MindSpore dtype attribute name. BF16 crosses as int16 bits (see module doc).
_MS_DTYPES: dict[torch.dtype, str] = {
    torch.float64: "float64",
    torch.float32: "float32",
    torch.float16: "float16",
    torch.bfloat16: "bfloat16",
    torch.int64: "int64",
    torch.int32: "int32",
    torch.int16: "int16",
    torch.int8: "int8",
    torch.uint8: "uint8",
    torch.bool: "bool_",
}
_BITCAST: dict[torch.dtype, tuple[torch.dtype, str]] = {torch.bfloat16: (torch.int16, "int16")}


def require_mindspore() -> Any:
    """Import and return ``mindspore``, or raise one actionable ``BackendUnavailable`` line."""
    try:
        import mindspore
        import numpy
    except ImportError as err:
        mindspore, reason = None, None if "mindspore" in str(err) else str(err)
    else:
        reason = None
    # A directory named "mindspore" on sys.path (e.g. tests/mindspore) imports as an empty
    # namespace package: that is not MindSpore either.
    if not hasattr(mindspore, "load_checkpoint"):
        raise BackendUnavailable(
            "MindSpore checkpoints need the 'mindspore' package, which is not installed",
            why=reason,
            fix=INSTALL_HINT,
        )
    if int(numpy.__version__.split(".")[0]) >= 2:
        raise BackendUnavailable(
            f"mindspore {mindspore.__version__} cannot handle bfloat16 with numpy {numpy.__version__}",
            why="MindSpore is compiled against NumPy 1.x",
            fix=f'pip install "numpy<2" (or {INSTALL_HINT}, which pins it)',
        )
    return mindspore


# ---- torch <-> MindSpore tensors ---------------------------------------------------------


def to_ms_tensor(t: torch.Tensor) -> Any:
    """A ``mindspore.Tensor`` with the same dtype, shape and bits as ``t`` (CPU)."""
    ms = require_mindspore()
    if t.dtype not in _MS_DTYPES:
        raise ConvertError(
            f"MindSpore checkpoints cannot hold {t.dtype} tensors",
            why="mindspore.save_checkpoint rejects float8 and other dtypes it has no serialiser for",
            fix="convert to bf16 first (ascend convert --precision bf16)",
        )
    t = t.detach().cpu().contiguous()
    if t.dtype in _BITCAST:
        carrier, _ = _BITCAST[t.dtype]
        return ms.Tensor.from_numpy(t.view(carrier).numpy()).view(getattr(ms, _MS_DTYPES[t.dtype]))
    return ms.Tensor.from_numpy(t.numpy())


def to_torch_tensor(value: Any, name: str = "") -> torch.Tensor:
    """The torch twin (dtype, shape, bits) of a ``mindspore.Tensor`` / ``Parameter``."""
    ms = require_mindspore()
    by_ms = {getattr(ms, n): td for td, n in _MS_DTYPES.items()}
    dtype = by_ms.get(value.dtype)
    if dtype is None:
        raise CheckpointError(
            f"tensor {name} has MindSpore dtype {value.dtype}, which has no torch equivalent here",
            fix="convert it to bfloat16 or float32 in MindSpore first",
        )
    if dtype in _BITCAST:
        _, ms_carrier = _BITCAST[dtype]
        return torch.from_numpy(value.view(getattr(ms, ms_carrier)).asnumpy()).view(dtype)
    return torch.from_numpy(value.asnumpy())


# ---- files -------------------------------------------------------------------------------


@dataclass(frozen=True)
class MsTensorInfo:
    """Where a MindSpore tensor is and what it is (``dtype`` as torch dtype)."""

    name: str
    path: Path
    dtype: torch.dtype
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        n = self.dtype.itemsize
        for d in self.shape:
            n *= d
        return n


def file_format(path: Path) -> str:
    if path.suffix == ".ckpt":
        return "ckpt"
    if path.suffix == ".safetensors":
        return "safetensors"
    raise CheckpointError(f"{path} is neither a .ckpt nor a .safetensors file", fix="pass a MindSpore checkpoint file or directory")


def mindspore_files(path: str | Path) -> list[Path]:
    """The checkpoint files of ``path``: the file itself, or a directory's ``*.safetensors``
    (through ``param_name_map.json`` when present) or ``*.ckpt`` files, sorted."""
    path = Path(path)
    if path.is_file():
        file_format(path)
        return [path]
    if not path.is_dir():
        raise CheckpointError(f"{path} does not exist", fix="pass a MindSpore checkpoint file or directory")
    name_map = path / NAME_MAP_FILE
    if name_map.is_file():
        files = sorted(set(_read_name_map(name_map).values()))
        missing = [f for f in files if not (path / f).is_file()]
        if missing:
            raise CheckpointError(
                f"{len(missing)} file(s) named in {name_map} are missing",
                why=", ".join(missing[:3]),
                fix="copy the whole checkpoint directory",
            )
        return [path / f for f in files]
    files = sorted(path.glob("*.safetensors")) or sorted(path.glob("*.ckpt"))
    files = [f for f in files if f.name != "hyper_param.safetensors"]  # MindSpore Transformers' training hyper-parameters
    if not files:
        hint = " (per-rank rank_*/ directories must be merged first: MindSpore Transformers' unified_safetensors)" if list(path.glob("rank_*")) else ""
        raise CheckpointError(f"no *.safetensors or *.ckpt files in {path}{hint}", fix="point at a complete MindSpore checkpoint")
    return files


def _read_name_map(path: Path) -> dict[str, str]:
    import json

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path} is not valid JSON", why=str(err)) from None
    data = data.get("weight_map", data) if isinstance(data, dict) else data  # both spellings exist
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise CheckpointError(f"{path} is not a {{parameter: file}} map")
    return data


def list_mindspore(path: str | Path) -> dict[str, MsTensorInfo]:
    """Name, file, dtype and shape of every tensor, in file order.

    Safetensors: headers only. ``.ckpt``: MindSpore must parse each file whole to list it.
    """
    out: dict[str, MsTensorInfo] = {}
    for f in mindspore_files(path):
        if file_format(f) == "safetensors":
            tensors, _, _ = read_header(f)
            items = [(n, DTYPES[i.dtype], i.shape) for n, i in tensors.items()]
        else:
            items = [(n, t.dtype, tuple(t.shape)) for n, t in _load(f, None)]
        for name, dtype, shape in items:
            if name in out:
                raise CheckpointError(f"tensor {name} appears in two files", why=f"{out[name].path.name} and {f.name}")
            out[name] = MsTensorInfo(name, f, dtype, tuple(shape))
    return out


def _load(path: Path, names: set[str] | None) -> Iterator[tuple[str, torch.Tensor]]:
    """One ``mindspore.load_checkpoint`` call; yields the chosen tensors, freeing each in turn."""
    ms = require_mindspore()
    if names is not None and not names:
        return
    choose = None if names is None else names.__contains__
    try:
        params = ms.load_checkpoint(str(path), format=file_format(path), choice_func=choose)
    except (ValueError, TypeError, RuntimeError, OSError) as err:
        raise CheckpointError(
            f"MindSpore cannot read {path}", why=str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__,
            fix="check that the file is a complete, unencrypted MindSpore checkpoint",
        ) from None
    for name in list(params):
        value = params.pop(name)
        if isinstance(value, str):  # append_dict entries (strings) are metadata, not weights
            continue
        yield name, to_torch_tensor(value, name)


def read_mindspore(
    path: str | Path, names: Iterable[str] | None = None, *, batch_bytes: int = DEFAULT_BATCH_BYTES
) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield ``(ms_name, tensor)`` for the tensors of a MindSpore checkpoint file or directory.

    ``names``: only these (default all). Safetensors files are read in batches of at most
    ``batch_bytes`` (at least one tensor); a ``.ckpt`` file is parsed whole by MindSpore.
    Tensors keep their dtype and bits (bf16 stays bf16).
    """
    require_mindspore()  # fail here, not at the first next()
    return _read(mindspore_files(path), None if names is None else set(names), batch_bytes)


def _read(files: list[Path], wanted: set[str] | None, batch_bytes: int) -> Iterator[tuple[str, torch.Tensor]]:
    for f in files:
        if file_format(f) == "ckpt":
            yield from _load(f, wanted)
            continue
        tensors, _, _ = read_header(f)
        batch: list[str] = []
        size = 0
        for name, info in tensors.items():
            if wanted is not None and name not in wanted:
                continue
            if batch and size + info.nbytes > batch_bytes:
                yield from _load(f, set(batch))
                batch, size = [], 0
            batch.append(name)
            size += info.nbytes
        if batch:
            yield from _load(f, set(batch))


def write_mindspore(
    path: str | Path, tensors: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]], format: str = "safetensors"
) -> tuple[int, str]:
    """Write ``tensors`` as one MindSpore checkpoint file with ``mindspore.save_checkpoint``.

    ``format``: "safetensors" (MindSpore safetensors, metadata ``{"format": "ms"}``) or "ckpt".
    Atomic: written under a temporary name, fsynced, renamed. Returns (size, sha256).
    """
    ms = require_mindspore()
    if format not in FORMATS:
        raise ConvertError(f"unknown MindSpore checkpoint format {format!r}", fix=f"use one of: {', '.join(FORMATS)}")
    path = Path(path)
    if path.suffix != f".{format}":
        raise ConvertError(f"{path.name} does not end in .{format}", fix=f"name MindSpore {format} files *.{format}")
    items = list(tensors.items()) if isinstance(tensors, Mapping) else list(tensors)
    tmp = path.with_name(f"{path.stem}.partial.{format}")
    try:
        ms.save_checkpoint([{"name": name, "data": to_ms_tensor(t)} for name, t in items], str(tmp), format=format)
        os.chmod(tmp, 0o644)  # MindSpore leaves its files read-only
        fsync_file(tmp)
        publish(tmp, path)
    except OSError as err:
        _remove(tmp)
        raise ConvertError(f"cannot write {path}", why=err.strerror) from None
    except (ValueError, TypeError, RuntimeError) as err:
        _remove(tmp)
        raise ConvertError(f"MindSpore could not write {path}", why=str(err).strip().splitlines()[0]) from None
    return path.stat().st_size, file_sha256(path)


def _remove(path: Path) -> None:
    for p in (path, path.with_suffix(".tmp")):
        try:
            p.unlink()
        except FileNotFoundError:
            pass
