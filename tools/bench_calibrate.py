"""Benchmark calibration on ONE decoder layer of real GLM-5 or DeepSeek-V3 shape (random weights).

Writes just that layer (published config via ``ascend.models.catalog``: all 256 routed experts,
block-FP8 like the published checkpoints, a small vocabulary) into a temp dir, then in a fresh
process runs the calibration runner's per-layer step (``ascend.quant.calibrate._calibrate_layer``:
recording, smoothing, simulated W8A8 on held-out tokens, streamed experts) on random hidden states
of ``--samples`` sequences of ``--seq-len`` tokens, and reports:

- the whole per-layer step's time, and the part spent reading + dequantizing weights;
- calibration throughput (tokens/s) and the peak RSS of the measuring process, next to the
  memory formula ``ascend.quant.calibrate.memory_bytes``;
- projected time for the whole model with the recipe's default calibration set, on this 2-core
  host and on a 64-core host (assumes compute scales with cores; weight reading does not).

Usage:
    python tools/bench_calibrate.py                       # GLM-5, ~10 GB FP8 layer in a temp dir
    python tools/bench_calibrate.py --family deepseek_v3 --dir /big/tmp
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODEL_IDS = {"glm_moe_dsa": "zai-org/GLM-5-FP8", "deepseek_v3": "deepseek-ai/DeepSeek-V3"}
FULL_LAYERS = {"glm_moe_dsa": 78, "deepseek_v3": 61}
ROWS = 1024
FILE_BYTES = 1 << 30


def write_layer(out: Path, family: str) -> int:
    """The layer's tensors as block-FP8 shards + index. Random rows are drawn once per width and
    repeated (drawing ~10 GB of random numbers would take longer than the calibration)."""
    import torch

    from ascend.checkpoint.safetensors_writer import SafetensorsWriter
    from ascend.models.args import ModelArgs
    from ascend.models.catalog import published_config
    from ascend.models.tensors import tensor_specs

    cfg = published_config(MODEL_IDS[family])
    cfg.update(num_hidden_layers=1, first_k_dense_replace=0, num_nextn_predict_layers=0, vocab_size=1024)
    if "indexer_types" in cfg:
        cfg["indexer_types"] = ["full"]
    if "mlp_layer_types" in cfg:
        cfg["mlp_layer_types"] = ["sparse"]
    g = torch.Generator().manual_seed(0)
    blocks: dict = {}

    def rows(dtype: str, n: int, cols: int) -> torch.Tensor:
        if (dtype, cols) not in blocks:
            if dtype == "F8_E4M3":  # codes without NaN, exponent <= 7: |w| < 2 before the block scale
                code = torch.randint(0, 0x40, (ROWS, cols), dtype=torch.uint8, generator=g)
                code |= torch.randint(0, 2, (ROWS, cols), dtype=torch.uint8, generator=g) << 7
                blocks[dtype, cols] = code.view(torch.float8_e4m3fn)
            else:
                blocks[dtype, cols] = (torch.randn(ROWS, cols, generator=g) * cols**-0.5).to(torch.bfloat16)
        return blocks[dtype, cols][:n]

    entries = [(s.name, {"f8_e4m3": "F8_E4M3", "f32": "F32"}.get(s.dtype, "BF16"), tuple(s.shape))
               for s in tensor_specs(ModelArgs.from_config(cfg), mtp=False)]
    groups, size = [[]], 0
    for e in entries:
        n = torch.Size(e[2]).numel() * {"F8_E4M3": 1, "F32": 4}.get(e[1], 2)
        if groups[-1] and size + n > FILE_BYTES:
            groups.append([])
            size = 0
        groups[-1].append(e)
        size += n
    out.mkdir(parents=True)
    weight_map, total = {}, 0
    for i, group in enumerate(groups):
        fname = f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors"
        w = SafetensorsWriter(out / fname, group)
        for name, dtype, shape in group:
            if name.endswith("_scale_inv"):  # |w| up to ~2 / sqrt(in): random-init magnitudes
                w.write(torch.full(shape, 1.0 / cfg["hidden_size"] ** 0.5))
            elif name.endswith("e_score_correction_bias"):
                w.write(torch.randn(shape, generator=g) * 0.01)
            elif len(shape) == 1:
                w.write(torch.ones(shape, dtype=torch.float32 if dtype == "F32" else torch.bfloat16))
            else:
                for r in range(0, shape[0], ROWS):
                    w.write(rows(dtype, min(ROWS, shape[0] - r), shape[1]))
            weight_map[name] = fname
        total += w.commit()[0]
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    return total


def _anon_bytes() -> int:
    """Resident anonymous memory of this process (RSS minus file-backed pages: safetensors mmaps
    the checkpoint, and the page cache it touches is counted in RSS but reclaimable)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    return 0


def measure(src: Path, samples: int, seq_len: int, held: int) -> dict:
    """In a fresh process: read-only pass, then the per-layer calibration step; peak memory."""
    import threading

    import torch

    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            peak[0] = max(peak[0], _anon_bytes())

    threading.Thread(target=sample, daemon=True).start()

    from ascend.models.args import load_model_args
    from ascend.models.quant_schemes import static_linears
    from ascend.quant.calibrate import Runtime, _calibrate_layer, memory_bytes
    from ascend.reference.model import make_rope
    from ascend.reference.parallel import Parallel
    from ascend.reference.weights import CheckpointReader

    a = load_model_args(src)
    reader = CheckpointReader(src, a, Parallel().coords)
    spent = [0.0, 0.0]  # wall, CPU inside reader.read (read + dequantize)
    plain_read = reader.read

    def timed_read(name):
        t, c = time.perf_counter(), time.process_time()
        out = plain_read(name)
        spent[0] += time.perf_counter() - t
        spent[1] += time.process_time() - c
        return out

    reader.read = timed_read
    rt = Runtime()
    g = torch.Generator().manual_seed(0)
    cal_len, held_len = [seq_len] * samples, [seq_len] * held
    x = {"cal": torch.randn(sum(cal_len), a.hidden_size, generator=g),
         "held": torch.randn(sum(held_len), a.hidden_size, generator=g)}
    x["chain"] = x["held"].clone()
    static = set(static_linears(a.family, "w8a8", a))
    t0, c0 = time.perf_counter(), time.process_time()
    _, _, rel = _calibrate_layer(reader, a, 0, make_rope(a), x, cal_len, held_len, static, 0.5, rt)
    t_layer, c_layer = time.perf_counter() - t0, time.process_time() - c0
    done.set()
    return {"t_read": spent[0], "t_layer": t_layer, "cpu_read": spent[1], "cpu_layer": c_layer, "rel_l2": rel, "peak_anon": peak[0],
            "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "formula": memory_bytes(a, sum(cal_len), sum(held_len), seq_len, rt), "tokens": sum(cal_len) + sum(held_len)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", choices=sorted(MODEL_IDS), default="glm_moe_dsa")
    ap.add_argument("--samples", type=int, default=2, help="calibration sequences measured (plus 1 held out)")
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--dir", type=Path, default=None, help="where to write the layer (default: a temp dir)")
    ap.add_argument("--measure", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.samples, args.seq_len, held=1)))
        return
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        t0 = time.perf_counter()
        size = write_layer(Path(tmp) / "layer", args.family)
        t_write = time.perf_counter() - t0
        argv = [sys.executable, __file__, "--measure", str(Path(tmp) / "layer"), "--samples", str(args.samples), "--seq-len", str(args.seq_len)]
        r = json.loads(subprocess.run(argv, check=True, capture_output=True, text=True).stdout)
    # projection: t_layer(N) = t_read + N * t_token; the recipe default is 64 samples x <= 512 tokens.
    # On a shared host wall time includes waiting for the CPU, so CPU time / 2 (this host's 2
    # torch threads) is projected too: what an idle 2-core host would take.
    default_tokens, layers, gb = 64 * 512, FULL_LAYERS[args.family], 1e9

    def projected(t_read: float, t_layer: float) -> tuple[float, float]:
        t_token = (t_layer - t_read) / r["tokens"]
        return layers * (t_read + default_tokens * t_token), layers * (t_read + default_tokens * t_token * 2 / 64)

    print(f"{args.family}: one layer, {size / gb:.1f} GB FP8 on disk (written in {t_write:.0f} s)")
    print(f"  calibration step on {r['tokens']} tokens: {r['t_layer']:.1f} s wall ({r['tokens'] / r['t_layer']:.0f} tokens/s), "
          f"of which reading + dequantizing weights {r['t_read']:.1f} s; held-out rel-L2 {r['rel_l2']:.3g}")
    print(f"  process CPU time: {r['cpu_layer']:.1f} s, of which reading {r['cpu_read']:.1f} s "
          f"-> idle 2-core host ~{r['cpu_layer'] / 2:.1f} s ({2 * r['tokens'] / r['cpu_layer']:.0f} tokens/s)")
    print(f"  peak memory {r['peak_anon'] / gb:.2f} GB (anonymous; RSS incl. mmapped checkpoint pages {r['peak_rss'] / gb:.2f} GB); "
          f"memory formula {r['formula'] / gb:.2f} GB")
    for label, (t_read, t_layer) in [("wall", (r["t_read"], r["t_layer"])), ("CPU/2", (r["cpu_read"] / 2, r["cpu_layer"] / 2))]:
        h2, h64 = projected(t_read, t_layer)
        print(f"  projected from {label}, {layers} layers x {default_tokens} tokens: {h2 / 3600:.1f} h on 2 cores, "
              f"{h64 / 3600:.2f} h on 64 cores (compute scaled by 2/64, weight reading not)")

if __name__ == "__main__":
    main()
