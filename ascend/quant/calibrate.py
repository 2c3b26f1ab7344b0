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

The MTP layer (index ``num_hidden_layers``, when the source has its weights) is calibrated last,
on the inputs the engine gives it: ``eh_proj([enorm(embed(t_{p+1})) | hnorm(norm(h_p))])`` from
the main model's final hidden states (float for calibration and the held-out report, simulated
for the chain). The final-logits report is taken before it (``logits.json`` in the state).

Output, in ``<out>/.ascend-convert/calibration/`` (``ascend.quant.store``, the interface of
docs/conversion.md): ``calibration.safetensors`` (``M.input_min``, ``M.input_max``,
``M.smooth_scale``, the smoothed float tensors that are not just a static weight times
``smooth_scale``, under their checkpoint names), ``calibration.json`` (written last) and
``gate.json``. The accuracy figures and the gate: ``ascend.quant.accuracy``.
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

from ascend.checkpoint.safetensors_io import SafetensorsDir
from ascend.errors import BackendUnavailable, CheckFailed, ConvertError
from ascend.fileio import write_atomic, write_json
from ascend.models.args import ModelArgs, load_model_args
from ascend.models.quant_schemes import static_linears
from ascend.quant import data
from ascend.quant.accuracy import agreement_from_sums, agreement_sums, check_gate
from ascend.quant.layer import Attention, LayerWeights, mlp_forward, run_attention
from ascend.quant.sim import ActQuant, Recorder
from ascend.quant.smooth import Smoothing, smooth_layer
from ascend.quant.store import CALIBRATION_DIR, FORMAT, GATE, finished
from ascend.recipe.schema import CalibrationSection
from ascend.reference.layers import rms_norm
from ascend.reference.model import make_rope
from ascend.reference.parallel import Parallel
from ascend.reference.weights import CheckpointReader

HOLD_EVERY = 8  # every 8th sample is held out for the accuracy report


@dataclass
class Runtime:
    """How the run executes (not part of the result: a resumed run may change these)."""

    device: str = "cpu"
    batch_tokens: int = 4096  # attention rows per step (bounds the attention workspace)
    expert_chunk: int = 8  # routed experts in memory at once
    log: object = None  # callable(str) for per-layer progress lines


@dataclass
class _Plan:
    """What a calibration run computes from (source, data, options); ``key`` names the result."""

    a: ModelArgs
    reader: CheckpointReader
    static: list[str]
    mtp: bool
    cal: list[list[int]]
    held: list[list[int]]
    info: dict
    key: str


def calibrate(src: str | Path, out: str | Path, cfg: CalibrationSection, *, scheme: str = "w8a8",
              runtime: Runtime | None = None) -> dict:
    """Calibrate ``src`` for ``scheme``; returns calibration.json's content. Resumes from the
    state in ``out``; a finished calibration of the same source, data and options is reused
    (only the gate is checked again, with ``cfg``'s thresholds). Raises ``CheckFailed`` (exit 3)
    when the accuracy gate fails (the files are still written, so the report can be inspected)."""
    rt = runtime or Runtime()
    device = resolve_device(rt.device)
    state = Path(out) / CALIBRATION_DIR
    plan = _plan(src, cfg, scheme)
    done = finished(out)
    if done is not None and done.get("run") == plan.key:
        _gate(state, done, cfg.thresholds)
        return done
    a, reader, static, mtp, cal, held, info = plan.a, plan.reader, plan.static, plan.mtp, plan.cal, plan.held, plan.info
    L = a.num_hidden_layers
    start = _prepare_state(state, plan.key)
    with torch.device(device) if device != "cpu" else contextlib.nullcontext():  # new tensors on the NPU
        x = _resume_hidden(state, start) if start else _embed(reader, a, cal, held)
        x = {k: v.to(device) for k, v in x.items()}
        rope = make_rope(a)
        layers = L + mtp
        for layer in range(start, layers):
            lengths = [len(s) for s in cal], [len(s) for s in held]
            if layer == L:  # the main model is done: its logits report, then the MTP layer's inputs
                write_json(state / "logits.json", _logits_report(reader, a, x))
                x, lengths = _mtp_inputs(reader, a, x, cal, held)
            x, tensors, rel = _calibrate_layer(reader, a, layer, rope, x, *lengths,
                                               {m for m in static if m.startswith(f"model.layers.{layer}.")}, cfg.smoothing_alpha, rt)
            _save_layer(state, layer, x, tensors, rel)
            if rt.log:
                rt.log(f"layer {layer + 1}/{layers}{' (MTP)' if layer == L else ''}: rel-L2 {rel:.3g}")
        if not (state / "logits.json").is_file():  # no MTP layer, or resumed after the last main layer
            write_json(state / "logits.json", _logits_report(reader, a, x))
    info["run"] = plan.key
    info["layers"] = {str(n): {"rel_l2": _layer_rel(state, n)} for n in range(layers)}
    info["logits"] = json.loads((state / "logits.json").read_text())
    _finish(state, layers, info)
    _gate(state, info, cfg.thresholds)
    return info


def _gate(state: Path, info: dict, th) -> None:
    """``check_gate``, remembered in ``gate.json``: ``load_calibration`` refuses a calibration
    that failed it, and ``verify`` holds the output's logits to the thresholds it passed."""
    try:
        check_gate(info, th)
    except CheckFailed as err:
        write_json(state / GATE, {"passed": False, "thresholds": th.model_dump(), "error": err.line()})
        raise
    write_json(state / GATE, {"passed": True, "thresholds": th.model_dump()})


def _plan(src: str | Path, cfg: CalibrationSection, scheme: str) -> _Plan:
    src = Path(src)
    a = load_model_args(src)
    reader = CheckpointReader(src, a, Parallel().coords)
    L = a.num_hidden_layers
    has_mtp = bool(a.num_nextn_predict_layers) and reader.has(f"model.layers.{L}.eh_proj.weight")
    static = static_linears(a.family, scheme, a, mtp=has_mtp)
    mtp = any(m.startswith(f"model.layers.{L}.") for m in static)  # the scheme may leave the MTP layer float
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
        "source_fingerprint": SafetensorsDir(src).fingerprint(), "mtp_layer": L if mtp else None,
    }
    key = hashlib.sha256(json.dumps([info, cal, held], sort_keys=True).encode()).hexdigest()
    return _Plan(a, reader, static, mtp, cal, held, info, key)


def is_current(src: str | Path, out: str | Path, cfg: CalibrationSection, scheme: str) -> bool:
    """Whether ``out`` holds a finished calibration of ``src`` with these data and options."""
    done = finished(out)
    return done is not None and done.get("run") == _plan(src, cfg, scheme).key


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
    t.update({k: v for k, v in smoothing.tensors.items() if k.removesuffix(".weight") not in smoothing.scaled})
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


def _mtp_inputs(reader, a: ModelArgs, x: dict, cal: list[list[int]], held: list[list[int]]) -> tuple[dict, tuple[list, list]]:
    """The MTP layer's input for every position p < n - 1 of every sequence (main-model final
    hidden ``h_p`` with the next token ``t_{p+1}``; as the reference ``MTPLayer``), and the new
    sequence lengths (n - 1)."""
    L, eps = a.num_hidden_layers, a.rms_norm_eps
    p = f"model.layers.{L}"
    emb = reader.read(f"{p}.embed_tokens.weight" if reader.has(f"{p}.embed_tokens.weight") else "model.embed_tokens.weight")
    norm, enorm, hnorm, eh = (reader.read(n) for n in ("model.norm.weight", f"{p}.enorm.weight", f"{p}.hnorm.weight", f"{p}.eh_proj.weight"))

    def shifted(h: torch.Tensor, seqs: list[list[int]]) -> torch.Tensor:
        keep, nxt, row = [], [], 0
        for s in seqs:  # a one-token sequence has no next token: nothing for the MTP layer
            keep.append(torch.arange(row, row + len(s) - 1))
            nxt += s[1:]
            row += len(s)
        e = rms_norm(emb[torch.tensor(nxt, dtype=torch.int64)].to(h.device), enorm.to(h.device), eps)
        hid = rms_norm(rms_norm(h[torch.cat(keep).to(h.device)], norm.to(h.device), eps), hnorm.to(h.device), eps)
        return torch.cat([e, hid], dim=-1) @ eh.to(h.device).T

    new = {"cal": shifted(x["cal"], cal), "held": shifted(x["held"], held), "chain": shifted(x["chain"], held)}
    return new, ([len(s) - 1 for s in cal if len(s) > 1], [len(s) - 1 for s in held if len(s) > 1])


def _logits_report(reader, a: ModelArgs, x: dict, rows: int = 256) -> dict:
    """Final logits of the held-out tokens: float model vs simulated static W8A8 end to end
    (``rows`` tokens at a time: [tokens, vocab] logits of a real model are gigabytes)."""
    norm = reader.read("model.norm.weight")
    head = reader.read("lm_head.weight" if reader.has("lm_head.weight") else "model.embed_tokens.weight")
    n = x["held"].shape[0]
    sums = torch.zeros(4, dtype=torch.float64)
    for lo in range(0, n, rows):
        f = rms_norm(x["held"][lo:lo + rows], norm, a.rms_norm_eps) @ head.T
        q = rms_norm(x["chain"][lo:lo + rows], norm, a.rms_norm_eps) @ head.T
        sums += agreement_sums(f, q)
    return agreement_from_sums(sums, n)


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


def _finish(state: Path, layers: int, info: dict) -> None:
    """calibration.safetensors from the layer files, streamed tensor by tensor (the smoothed
    tensors of a whole model do not fit in memory), then calibration.json."""
    from ascend.checkpoint.safetensors_writer import SafetensorsWriter

    handles = [safe_open(str(_layer_file(state, n)), "pt") for n in range(layers)]
    where = {k: h for h in handles for k in h.keys()}  # noqa: SIM118 (a safe_open handle, not a dict)
    names = sorted(where)
    entries = [(k, "F32", tuple(where[k].get_slice(k).get_shape())) for k in names]
    writer = SafetensorsWriter(state / "calibration.safetensors", entries, metadata={"format": FORMAT})
    for k in names:
        writer.write(where[k].get_tensor(k).float().contiguous())
    writer.commit()
    write_json(state / "calibration.json", info)
