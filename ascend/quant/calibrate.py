"""Layer-by-layer calibration of static W8A8 on the CPU reference runtime (issue #15).

The hidden states of every calibration token are carried from layer to layer; only one layer's
non-expert weights plus ``expert_chunk`` routed experts are in memory at a time (read through
``CheckpointReader``: FP8 sources are dequantized on the fly, nothing is written first). Per
layer:
1. float attention over the calibration tokens, recording per-channel min/max of every static
   linear's input (``sim.Recorder``);
2. optional smoothing (``smooth.py``) and the per-tensor input ranges of the smoothed model;
3. on held-out tokens, the same float input through the float layer and through the simulated
   static W8A8 layer: relative L2 of the outputs (``layers[N].rel_l2``); a second held-out chain
   runs simulated layers end to end, so the final logits are compared too (KL, top-1, rel. error);
4. one streaming pass over the MLP / experts for all token sets; state saved (resume point).

Output, in ``<out>/.ascend-convert/calibration/`` (the interface of docs/conversion.md):
``calibration.safetensors`` (``M.input_min``, ``M.input_max``, ``M.smooth_scale``, smoothed float
tensors under their checkpoint names) and ``calibration.json``, written last.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save

from ascend.checkpoint.files import STATE_DIR
from ascend.checkpoint.safetensors_io import SafetensorsDir
from ascend.errors import BackendUnavailable, CheckFailed, ConvertError
from ascend.fileio import write_atomic, write_json
from ascend.models.args import ModelArgs, load_model_args
from ascend.models.quant_schemes import static_linears
from ascend.quant import data
from ascend.quant.layer import Attention, LayerWeights, mlp_forward, run_attention
from ascend.quant.sim import ActQuant, Recorder
from ascend.quant.smooth import Smoothing, smooth_layer
from ascend.recipe.schema import CalibrationSection
from ascend.reference.layers import rms_norm
from ascend.reference.model import make_rope
from ascend.reference.parallel import Parallel
from ascend.reference.weights import CheckpointReader

CALIBRATION_DIR = f"{STATE_DIR}/calibration"  # under the convert output dir
FORMAT = "ascend-calibration/1"
HOLD_EVERY = 8  # every 8th sample is held out for the accuracy report


@dataclass
class Runtime:
    """How the run executes (not part of the result: a resumed run may change these)."""

    device: str = "cpu"
    batch_tokens: int = 4096  # attention rows per step (bounds the attention workspace)
    expert_chunk: int = 8  # routed experts in memory at once
    log: object = None  # callable(str) for per-layer progress lines


def calibrate(src: str | Path, out: str | Path, cfg: CalibrationSection, *, scheme: str = "w8a8",
              runtime: Runtime | None = None) -> dict:
    """Calibrate ``src`` for ``scheme``; returns calibration.json's content. Resumes from the
    state in ``out``; raises ``CheckFailed`` (exit 3) when the accuracy gate fails (the files are
    still written, so the report can be inspected)."""
    rt = runtime or Runtime()
    device = resolve_device(rt.device)
    src, state = Path(src), Path(out) / CALIBRATION_DIR
    a = load_model_args(src)
    static = static_linears(a.family, scheme, a, mtp=False)  # the MTP layer is not calibrated (yet)
    records = data.load_jsonl(cfg.file) if cfg.file else data.builtin_samples()
    seqs = data.tokenize_samples(src, records, samples=cfg.samples, max_len=cfg.max_len)
    if len(seqs) < 2:
        raise ConvertError(f"calibration needs at least 2 samples, got {len(seqs)}", fix="add samples or raise convert.calibration.samples")
    hold = set(range(HOLD_EVERY - 1, len(seqs), HOLD_EVERY)) or {len(seqs) - 1}
    cal = [s for i, s in enumerate(seqs) if i not in hold]
    held = [s for i, s in enumerate(seqs) if i in hold]
    info = {
        "format": FORMAT, "scheme": scheme, "family": a.family, "samples": len(cal), "tokens": sum(map(len, cal)),
        "held_out": {"samples": len(held), "tokens": sum(map(len, held))},
        "smoothing": None if cfg.smoothing_alpha is None else {"alpha": cfg.smoothing_alpha},
        "source_fingerprint": SafetensorsDir(src).fingerprint(),
    }
    run_key = hashlib.sha256(json.dumps([info, cal, held], sort_keys=True).encode()).hexdigest()
    start = _prepare_state(state, run_key)
    reader = CheckpointReader(src, a, Parallel().coords)
    with torch.device(device) if device != "cpu" else contextlib.nullcontext():  # new tensors on the NPU
        x = _resume_hidden(state, start) if start else _embed(reader, a, cal, held)
        x = {k: v.to(device) for k, v in x.items()}
        rope = make_rope(a)
        for layer in range(start, a.num_hidden_layers):
            x, tensors, rel = _calibrate_layer(reader, a, layer, rope, x, [len(s) for s in cal], [len(s) for s in held],
                                               {m for m in static if m.startswith(f"model.layers.{layer}.")}, cfg.smoothing_alpha, rt)
            _save_layer(state, layer, x, tensors, rel)
            if rt.log:
                rt.log(f"layer {layer + 1}/{a.num_hidden_layers}: rel-L2 {rel:.3g}")
        logits = _logits_report(reader, a, x)
    info["layers"] = {str(n): {"rel_l2": _layer_rel(state, n)} for n in range(a.num_hidden_layers)}
    info["logits"] = logits
    _finish(state, a, info)
    check_gate(info, cfg.thresholds)
    return info


def resolve_device(name: str) -> str:
    """``cpu``, or ``npu`` through torch_npu (imported only here; BackendUnavailable when absent)."""
    if name == "cpu":
        return "cpu"
    if name != "npu":
        raise ConvertError(f"--device {name!r}: unknown device", fix="use cpu or npu")
    try:
        import torch_npu  # noqa: F401
    except Exception as err:  # ImportError, or a torch_npu without CANN failing inside its import
        raise BackendUnavailable("--device npu: torch_npu cannot be imported", why=str(err).splitlines()[0] if str(err) else type(err).__name__,
                                 fix="install the torch_npu build matching torch with CANN, or use --device cpu") from None
    if not torch.npu.is_available():
        raise BackendUnavailable("--device npu: torch_npu sees no NPU", fix="check the driver (ascend doctor) or use --device cpu")
    return "npu"


RUNTIME_BYTES = 600 << 20  # interpreter, torch, tokenizer


def memory_bytes(a: ModelArgs, cal_tokens: int, held_tokens: int, max_len: int, rt: Runtime) -> int:
    """Peak host memory of a calibration run (docs/conversion.md, Calibration), float32 everywhere:

    ``0.6 GB + 4 B × (max(3 × W_attn + workspace, W_attn + 1.5 × expert_chunk × W_expert + W_mlp) + 6 × N × hidden)``

    The attention phase holds the float attention, its simulated copy and the smoothed tensors
    (W_attn: the layer's attention and norm parameters) plus the workspace (``batch_tokens`` rows
    of per-head q/k/v and the attention and DSA-index scores of one ``max_len`` sequence); the MLP
    phase the smoothed tensors still to be saved, ``expert_chunk`` routed experts (W_expert =
    3 × hidden × moe_intermediate; stacking copies a third to two thirds of them once) and the
    shared expert / router / dense MLP (W_mlp). N = calibration + 3 × held-out tokens (the rows
    carried and the rows the MLP sees)."""
    from ascend.models.tensors import tensor_specs

    p = f"model.layers.{a.first_k_dense_replace}."  # a MoE layer when there is one
    specs = [s for s in tensor_specs(a) if s.name.startswith(p) and ".mlp.experts." not in s.name]
    w_mlp = sum(_numel(s.shape) for s in specs if ".mlp." in s.name)
    w_attn = sum(_numel(s.shape) for s in specs) - w_mlp
    expert = 3 * a.hidden_size * (a.moe_intermediate_size or 0)
    rows = cal_tokens + 3 * held_tokens
    heads = a.num_attention_heads
    head_width = a.qk_head_dim + a.v_head_dim if a.is_mla else 3 * a.head_dim
    scores = 3 * (heads + (a.index_n_heads if a.has_indexer else 0)) * max_len * max_len
    workspace = 3 * min(rt.batch_tokens, cal_tokens) * heads * head_width + scores
    phase = max(3 * w_attn + workspace, w_attn + 3 * rt.expert_chunk * expert // 2 + w_mlp)
    return RUNTIME_BYTES + 4 * (phase + 6 * rows * a.hidden_size)


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


# --- per layer ---------------------------------------------------------------------------------
def _calibrate_layer(reader, a: ModelArgs, layer: int, rope, x: dict, cal_len, held_len, static: set[str], alpha, rt: Runtime):
    """One layer: returns (next hidden states, the layer's calibration tensors, rel-L2 of the
    simulated layer on held-out tokens)."""
    rec = Recorder()
    attn = Attention(LayerWeights(reader, static, rec, device=rt.device), a, layer, rope)
    h_cal = run_attention(attn, rope, x["cal"], cal_len, rt.batch_tokens)
    rec.on = False
    h_held = run_attention(attn, rope, x["held"], held_len, rt.batch_tokens)
    h_held_q, tensors = None, {}
    if static:
        smoothing = smooth_layer(a, layer, static, rec.min, rec.max, LayerWeights(reader, set(), None).optional, alpha) \
            if alpha is not None else Smoothing()
        ranges = _ranges(static, rec, smoothing)
        sim = Attention(LayerWeights(reader, static, ActQuant({m: (float(r[0]), float(r[1])) for m, r in ranges.items()}),
                                     smoothing.tensors, quant_weights=True, device=rt.device), a, layer, rope)
        h_held_q = run_attention(sim, rope, x["held"], held_len, rt.batch_tokens)
        h_chain = run_attention(sim, rope, x["chain"], held_len, rt.batch_tokens)
        tensors = _layer_tensors(ranges, smoothing)
        del sim, smoothing  # the MLP phase holds experts, not attention weights
    else:
        h_chain = run_attention(attn, rope, x["chain"], held_len, rt.batch_tokens)
    del attn
    parts = [h_cal, h_held, h_chain] + ([h_held_q] if h_held_q is not None else [])
    y = mlp_forward(reader, a, layer, torch.cat(parts), expert_chunk=rt.expert_chunk, device=rt.device)
    nc, nh = h_cal.shape[0], h_held.shape[0]
    new = {"cal": y[:nc], "held": y[nc:nc + nh], "chain": y[nc + nh:nc + 2 * nh]}
    held_q = y[nc + 2 * nh:] if h_held_q is not None else new["held"]
    rel = float((held_q - new["held"]).norm() / new["held"].norm().clamp_min(1e-30))
    return new, tensors, rel


def _ranges(static: set[str], rec: Recorder, smoothing: Smoothing) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per static linear, the per-tensor (min ≤ 0, max ≥ 0) of its (smoothed) input."""
    out = {}
    for m in sorted(static):
        if m not in rec.min:
            raise ConvertError(f"calibration: static linear {m} was never run", why="the scheme names a linear this layer does not use")
        lo, hi = rec.min[m], rec.max[m]
        if m in smoothing.transforms:  # x' = (x - z) / s with s > 0 keeps each channel's order
            z, s = smoothing.transforms[m]
            lo, hi = (lo - z) / s, (hi - z) / s
        out[m] = (lo.min().clamp(max=0).reshape(1), hi.max().clamp(min=0).reshape(1))
    return out


def _layer_tensors(ranges: dict, smoothing: Smoothing) -> dict[str, torch.Tensor]:
    t = {}
    for m, (lo, hi) in ranges.items():
        t[f"{m}.input_min"], t[f"{m}.input_max"] = lo, hi
        if m in smoothing.transforms:
            t[f"{m}.smooth_scale"] = smoothing.transforms[m][1]
    t.update(smoothing.tensors)
    return t


# --- embedding and logits ------------------------------------------------------------------------
def _embed(reader, a: ModelArgs, cal: list[list[int]], held: list[list[int]]) -> dict:
    emb = reader.read("model.embed_tokens.weight")
    ids = lambda seqs: torch.tensor([t for s in seqs for t in s], dtype=torch.int64)
    bad = [t for s in cal + held for t in s if not 0 <= t < emb.shape[0]]
    if bad:
        raise ConvertError(f"calibration: token id {bad[0]} is outside the embedding (vocab {emb.shape[0]})",
                           fix="the tokenizer does not match the checkpoint")
    held_x = emb[ids(held)].clone()
    return {"cal": emb[ids(cal)].clone(), "held": held_x, "chain": held_x.clone()}


def _logits_report(reader, a: ModelArgs, x: dict, rows: int = 256) -> dict:
    """Final logits of the held-out tokens: float model vs simulated static W8A8 end to end
    (``rows`` tokens at a time: [tokens, vocab] logits of a real model are gigabytes)."""
    norm = reader.read("model.norm.weight")
    head = reader.read("lm_head.weight" if reader.has("lm_head.weight") else "model.embed_tokens.weight")
    n = x["held"].shape[0]
    kl = same = err2 = ref2 = 0.0
    for lo in range(0, n, rows):
        f = rms_norm(x["held"][lo:lo + rows], norm, a.rms_norm_eps) @ head.T
        q = rms_norm(x["chain"][lo:lo + rows], norm, a.rms_norm_eps) @ head.T
        logp_f, logp_q = torch.log_softmax(f, -1), torch.log_softmax(q, -1)
        kl += float((logp_f.exp() * (logp_f - logp_q)).sum())
        same += int((f.argmax(-1) == q.argmax(-1)).sum())
        err2, ref2 = err2 + float((q - f).pow(2).sum()), ref2 + float(f.pow(2).sum())
    return {"kl": kl / n, "top1": same / n, "rel_err": (err2 / max(ref2, 1e-30)) ** 0.5, "tokens": n}


def check_gate(info: dict, th) -> None:
    """Exit 3 (``CheckFailed``) naming every broken threshold and the worst layers."""
    rels = {int(n): v["rel_l2"] for n, v in info["layers"].items()}
    worst = sorted(rels, key=lambda n: -rels[n])[:3]
    broken = []
    if th.layer_rel_l2 is not None:
        over = [n for n in worst if rels[n] > th.layer_rel_l2]
        if over:
            broken.append(f"layer rel-L2 above {th.layer_rel_l2}: " + ", ".join(f"layer {n} {rels[n]:.3g}" for n in over))
    lg = info["logits"]
    if th.logits_kl is not None and lg["kl"] > th.logits_kl:
        broken.append(f"logits KL {lg['kl']:.3g} > {th.logits_kl}")
    if th.top1 is not None and lg["top1"] < th.top1:
        broken.append(f"top-1 agreement {lg['top1']:.3g} < {th.top1}")
    if th.logits_rel_err is not None and lg["rel_err"] > th.logits_rel_err:
        broken.append(f"logits rel. error {lg['rel_err']:.3g} > {th.logits_rel_err}")
    if broken:
        names = ", ".join(f"{n} ({rels[n]:.3g})" for n in worst)
        raise CheckFailed("calibrated W8A8 accuracy gate failed: " + "; ".join(broken),
                          why=f"worst layers by rel-L2: {names}",
                          fix="enable or retune smoothing (convert.calibration.smoothing_alpha), use more calibration data, or relax convert.calibration.thresholds")


# --- state and output -----------------------------------------------------------------------------
def _layer_file(state: Path, layer: int) -> Path:
    return state / f"layer-{layer:05d}.safetensors"


def _prepare_state(state: Path, run_key: str) -> int:
    """The first layer still to do. State of another run (other source, data or options) is discarded."""
    key_file = state / "run.json"
    if key_file.is_file() and json.loads(key_file.read_text()).get("run") == run_key:
        hidden = state / "hidden.safetensors"
        if hidden.is_file():
            with safe_open(str(hidden), "pt") as f:
                return int(f.metadata()["next_layer"])
        return 0
    if state.exists():
        shutil.rmtree(state)
    state.mkdir(parents=True)
    write_json(key_file, {"run": run_key})
    return 0


def _save_layer(state: Path, layer: int, x: dict, tensors: dict, rel: float) -> None:
    """The layer's tensors, then the hidden states that make the next layer the resume point."""
    tensors = {k: v.detach().cpu().clone() for k, v in tensors.items()}  # clone: shared scales are saved apart
    write_atomic(_layer_file(state, layer), save(tensors, metadata={"rel_l2": repr(rel)}))
    hidden = {k: x[k].cpu().contiguous() for k in ("cal", "held", "chain")}
    write_atomic(state / "hidden.safetensors", save(hidden, metadata={"next_layer": str(layer + 1)}))


def _resume_hidden(state: Path, start: int) -> dict:
    with safe_open(str(state / "hidden.safetensors"), "pt") as f:
        return {k: f.get_tensor(k) for k in ("cal", "held", "chain")}


def _layer_rel(state: Path, layer: int) -> float:
    with safe_open(str(_layer_file(state, layer)), "pt") as f:
        return float(f.metadata()["rel_l2"])


def _finish(state: Path, a: ModelArgs, info: dict) -> None:
    """calibration.safetensors from the layer files, streamed tensor by tensor (the smoothed
    tensors of a whole model do not fit in memory), then calibration.json."""
    from ascend.checkpoint.safetensors_writer import SafetensorsWriter

    handles = [safe_open(str(_layer_file(state, n)), "pt") for n in range(a.num_hidden_layers)]
    where = {k: h for h in handles for k in h.keys()}  # noqa: SIM118 (a safe_open handle, not a dict)
    names = sorted(where)
    entries = [(k, "F32", tuple(where[k].get_slice(k).get_shape())) for k in names]
    writer = SafetensorsWriter(state / "calibration.safetensors", entries, metadata={"format": FORMAT})
    for k in names:
        writer.write(where[k].get_tensor(k).float().contiguous())
    writer.commit()
    write_json(state / "calibration.json", info)


# --- the interface the W8A8 writer reads ------------------------------------------------------------
class Calibration:
    """A finished calibration. ``replaced(name)`` is the final float tensor for every tensor the
    smoothing changed (norm weights / biases, static linears' weights with their columns already
    multiplied by ``smooth_scale``, float consumers, v rows): write it instead of the source's.
    Tensors are read on demand (the smoothed tensors of a whole model are tens of GB); the
    object pickles (for worker processes) without its open file."""

    def __init__(self, path: Path, info: dict):
        self.path, self.info = path, info
        self._handle = None
        self.names = set(self._file().keys())

    def _file(self):
        if self._handle is None:
            self._handle = safe_open(str(self.path / "calibration.safetensors"), "pt")
        return self._handle

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_handle": None}

    def _get(self, name: str) -> torch.Tensor | None:
        return self._file().get_tensor(name) if name in self.names else None

    def input_range(self, module: str) -> tuple[float, float]:
        lo, hi = self._get(f"{module}.input_min"), self._get(f"{module}.input_max")
        if lo is None or hi is None:
            raise ConvertError(f"{self.path}: no calibrated input range for {module}",
                               fix="rerun calibration with the scheme being written (ascend calibrate)")
        return float(lo[0]), float(hi[0])

    def smooth_scale(self, module: str) -> torch.Tensor | None:
        return self._get(f"{module}.smooth_scale")

    def replaced(self, tensor_name: str) -> torch.Tensor | None:
        return None if tensor_name.endswith((".input_min", ".input_max", ".smooth_scale")) else self._get(tensor_name)


def load_calibration(out_dir: str | Path, *, source_fingerprint: str | None = None, scheme: str | None = None) -> Calibration:
    """The calibration in ``out_dir``; ``ConvertError`` (exit 2) when missing, incomplete, or made
    for another source / scheme."""
    path = Path(out_dir) / CALIBRATION_DIR
    meta = path / "calibration.json"
    fix = "run the calibration first (ascend calibrate --src SRC --out OUT)"
    if not meta.is_file():
        raise ConvertError(f"{path}: no complete calibration (calibration.json missing)", fix=fix)
    info = json.loads(meta.read_text())
    if info.get("format") != FORMAT:
        raise ConvertError(f"{meta}: format {info.get('format')!r}, expected {FORMAT!r}", fix=fix)
    if source_fingerprint and info.get("source_fingerprint") != source_fingerprint:
        raise ConvertError(f"{meta}: made for another source checkpoint (fingerprint differs)", fix=fix)
    if scheme and info.get("scheme") != scheme:
        raise ConvertError(f"{meta}: made for scheme {info.get('scheme')!r}, not {scheme!r}", fix=fix)
    return Calibration(path, info)
