"""Lazy weight reading for the reference model: HF checkpoint dirs and ``sharded`` dirs.

- HF dir: ``config.json`` + ``model.safetensors.index.json`` (or a single ``model.safetensors``,
  or several ``*.safetensors`` without an index). Tensors are read one at a time through
  ``safe_open(...).get_slice`` so a rank only materialises the rows/columns it holds.
- FP8 block checkpoints: a tensor is FP8 iff ``<name>_scale_inv`` exists (checkpoints.md §4); it is
  dequantized to float32 with its 128x128 block scales (partial edge blocks included) and then
  sliced.
- W8A8 (msModelSlim ``W8A8_DYNAMIC``): a tensor is int8 iff ``<name>_scale`` exists; it is
  dequantized as ``(q - offset) * scale`` per output channel, then sliced.
- static W8A8 (msModelSlim ``W8A8``): ``P.weight`` is int8 and ``P.deq_scale`` exists; ``read``
  returns a ``layers.StaticW8A8`` that simulates the integer kernel with the stored
  ``input_scale``, ``input_offset``, ``quant_bias`` and ``deq_scale`` (apply with ``layers.linear``).
- ``sharded`` dir: ``model-rank-0000r-of-0000w.safetensors`` per rank plus ``ascend-sharding.json``;
  the file of rank r already holds exactly r's slices, under the HF names.

Every problem is a one-line ``CheckpointError`` naming the file and the tensor.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open

from ascend.checkpoint.files import SHARDING_FILE
from ascend.checkpoint.fp8 import dequantize_fp8_block
from ascend.checkpoint.w8a8 import V0_WEIGHT_FILE_STEM, deq_scale_values, dequantize_w8a8
from ascend.checkpoint.w8a8 import WEIGHT_FILE_STEM as W8A8_WEIGHT_STEM
from ascend.errors import CheckpointError
from ascend.models.args import ModelArgs
from ascend.models.sharding import ShardCoords, shard_slice
from ascend.models.tensors import spec_index, tensor_specs
from ascend.reference.layers import StaticW8A8


class CheckpointReader:
    """Reads named tensors (or this rank's slices of them) as float32 from a checkpoint dir."""

    def __init__(self, model_dir: str | Path, args: ModelArgs, coords: ShardCoords, *, rank: int = 0, world_size: int = 1):
        self.dir = Path(model_dir)
        self.args, self.coords = args, coords
        self.config = args.config
        self.specs = spec_index(tensor_specs(args, mtp=True))
        self.sharded = (self.dir / SHARDING_FILE).is_file()
        self._handles: dict[Path, object] = {}
        self.weight_map: dict[str, Path] = {}
        self.plan: dict | None = None
        if self.sharded:
            self._index_sharded(rank, world_size)
        else:
            self._index_hf()
        block = (self.config.get("quantization_config") or {}).get("weight_block_size") or [128, 128]
        self.block = (int(block[0]), int(block[1]))

    # --- indexing ----------------------------------------------------------------------------
    def _index_hf(self) -> None:
        candidates = [self.dir / f"{stem}.safetensors.index.json" for stem in ("model", W8A8_WEIGHT_STEM, V0_WEIGHT_FILE_STEM)]
        index = next((path for path in candidates if path.is_file()), None)
        if index is not None:
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (OSError, ValueError, KeyError) as err:
                raise CheckpointError(f"{index}: not a safetensors index", why=str(err)) from None
            for name, file in weight_map.items():
                self.weight_map[name] = self.dir / file
            return
        files = sorted(self.dir.glob("*.safetensors"))
        if not files:
            raise CheckpointError(f"{self.dir}: no *.safetensors files", fix="pass a complete checkpoint directory")
        for file in files:
            for name in self._open(file).keys():
                self.weight_map[name] = file

    def _index_sharded(self, rank: int, world_size: int) -> None:
        plan_path = self.dir / SHARDING_FILE
        try:
            self.plan = json.loads(plan_path.read_text())
        except (OSError, ValueError) as err:
            raise CheckpointError(f"{plan_path}: cannot read", why=str(err)) from None
        file = self.dir / f"model-rank-{rank:05d}-of-{world_size:05d}.safetensors"
        if not file.is_file():
            found = sorted(p.name for p in self.dir.glob("model-rank-*.safetensors"))
            raise CheckpointError(
                f"{file}: missing",
                why=f"a sharded dir for {world_size} ranks needs one file per rank; found {found[:3]}...",
                fix="run with the world size the dir was written for (see ascend-sharding.json)",
            )
        for name in self._open(file).keys():
            self.weight_map[name] = file

    def _open(self, file: Path):
        handle = self._handles.get(file)
        if handle is None:
            if not file.is_file():
                raise CheckpointError(f"{file}: missing", why="listed in model.safetensors.index.json")
            try:
                handle = safe_open(str(file), framework="pt", device="cpu")
            except Exception as err:  # safetensors raises its own error types
                raise CheckpointError(f"{file}: not a readable safetensors file", why=str(err)) from None
            self._handles[file] = handle
        return handle

    # --- reading -----------------------------------------------------------------------------
    def has(self, name: str) -> bool:
        return name in self.weight_map

    def _file(self, name: str) -> Path:
        file = self.weight_map.get(name)
        if file is None:
            where = self.dir / ("model.safetensors.index.json" if not self.sharded else SHARDING_FILE)
            raise CheckpointError(f"{where}: tensor {name} is missing", fix="regenerate or re-download the checkpoint")
        return file

    def read(self, name: str) -> "torch.Tensor | StaticW8A8 | None":
        """This rank's part of tensor ``name`` as float32, or None when the rank holds none of it
        (another EP rank's expert). Which part is decided by ``ascend.models.shard_slice``; the
        full tensor must have the shape ``tensor_specs`` gives (in a sharded dir, the stored part
        must have the part's shape)."""
        spec = self.specs.get(name)
        if spec is None:
            raise KeyError(f"{name} is not a tensor of this {self.args.family} checkpoint")
        part = shard_slice(spec, self.coords)
        if part is None:
            return None
        file = self._file(name)
        handle = self._open(file)
        view = handle.get_slice(name)
        shape = tuple(view.get_shape())
        want = tuple(s.stop - s.start for s in part) if self.sharded else spec.shape
        if shape != want:
            raise CheckpointError(
                f"{file}: tensor {name} has shape {list(shape)}, expected {list(want)}",
                why="the checkpoint does not match its config.json" + (" and ascend-sharding.json" if self.sharded else ""),
            )
        scale_name = f"{name}_scale_inv"
        if scale_name in self.weight_map:  # FP8 block weight: dequantize what is stored, then slice
            scale_file = self._file(scale_name)
            scale = self._open(scale_file).get_tensor(scale_name)
            want_scale = (-(-shape[0] // self.block[0]), -(-shape[1] // self.block[1]))
            if tuple(scale.shape) != want_scale:
                raise CheckpointError(
                    f"{scale_file}: tensor {scale_name} has shape {list(scale.shape)}, expected {list(want_scale)}",
                    why=f"FP8 block scales of a {list(shape)} weight with {list(self.block)} blocks",
                )
            full = dequantize_fp8_block(handle.get_tensor(name), scale, block=self.block, dtype=torch.float32)
            return (full if self.sharded else full[part]).contiguous()
        if name.endswith(".weight") and f"{name[:-len('.weight')]}.deq_scale" in self.weight_map:
            return self._read_static(name, handle.get_tensor(name), part)
        if f"{name}_scale" in self.weight_map:  # W8A8 (msModelSlim): int8 rows with per-channel scale/offset
            scale = self._open(self._file(f"{name}_scale")).get_tensor(f"{name}_scale")
            offset_name = f"{name}_offset"
            offset = self._open(self._file(offset_name)).get_tensor(offset_name) if offset_name in self.weight_map else None
            if tuple(scale.shape) != (shape[0], 1):
                raise CheckpointError(
                    f"{self._file(f'{name}_scale')}: tensor {name}_scale has shape {list(scale.shape)}, expected {[shape[0], 1]}",
                    why=f"W8A8 per-channel scales of a {list(shape)} int8 weight",
                )
            full = dequantize_w8a8(handle.get_tensor(name), scale, offset)
            return (full if self.sharded else full[part]).contiguous()
        if self.sharded:
            return view[:].float()
        return view[part].float().contiguous()

    def read_extra(self, name: str) -> torch.Tensor | None:
        """A replicated tensor outside the model table, whole, as float32, or None when absent:
        the norm biases anti-outlier smoothing adds (``input_layernorm.bias``)."""
        if name not in self.weight_map:
            return None
        return self._open(self._file(name)).get_tensor(name).float()

    def _read_static(self, name: str, q: torch.Tensor, part: tuple[slice, ...]) -> StaticW8A8:
        """A static W8A8 linear: the stored (whole, or this rank's sharded) int8 weight and its
        parameters, cut to this rank's part (see ``StaticW8A8`` for the bias on row splits)."""
        module = name[: -len(".weight")]

        def get(suffix: str) -> torch.Tensor:
            return self._open(self._file(module + suffix)).get_tensor(module + suffix)

        deq, quant_bias = deq_scale_values(get(".deq_scale")), get(".quant_bias")
        scale, offset = get(".input_scale").reshape(1), get(".input_offset").reshape(1)
        if q.dtype != torch.int8 or tuple(deq.shape) != (q.shape[0],) or tuple(quant_bias.shape) != (q.shape[0],):
            raise CheckpointError(
                f"{self._file(name)}: static W8A8 {module} is malformed",
                why=f"weight {q.dtype}{list(q.shape)}, deq_scale {list(deq.shape)}, quant_bias {list(quant_bias.shape)}",
                fix="regenerate the checkpoint (weight int8 [out, in], deq_scale and quant_bias [out])")
        bias_int = quant_bias.to(torch.int64) + offset.to(torch.int64) * q.to(torch.int64).sum(dim=1)
        if not self.sharded:
            rows, cols = part
            q, deq, bias_int = q[rows, cols], deq[rows], bias_int[rows] * int(cols.start == 0)
        return StaticW8A8(q, deq, scale, offset, bias_int)

    def close(self) -> None:
        self._handles.clear()
