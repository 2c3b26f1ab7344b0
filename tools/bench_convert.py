"""Benchmark `ascend convert` against the I/O floor of the same machine, in the same run.

A synthetic checkpoint with the real GLM-5 tensor shapes (published config via
``ascend.models.catalog``; fewer layers and routed experts, a smaller vocabulary so embeddings do
not dominate) is written as block-FP8 into a temp dir. Then, each measured as wall time:

- floor: a plain copy of the source files (read + write + fsync, like the converter);
  a conversion reading S bytes and writing O bytes is compared with
  ``floor(S, O) = t_copy × (S + O) / (2 S)`` (the copy's bytes-per-second applied to the
  conversion's I/O volume), and also reported against ``t_copy`` alone;
- FP8 -> BF16, layout hf;
- BF16 -> W8A8, layout hf (source = the BF16 output above);
- FP8 -> BF16, layout sharded, TP 4 / EP 4;
- peak RSS (sum over the converter's process tree, sampled every 50 ms) at two checkpoint sizes.

Usage:
    python tools/bench_convert.py                       # ~2.5 GB FP8 source (5 layers)
    python tools/bench_convert.py --layers 3 5 --workers 2 --dir /big/tmp
Targets (issue 5): FP8->BF16 <= 1.5x floor, sharded <= 2x, W8A8 <= 3x; peak RSS < 1.5 GB, flat.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

from ascend.checkpoint.safetensors_io import SafetensorsWriter, fsync_dir
from ascend.models.args import ModelArgs
from ascend.models.catalog import published_config
from ascend.models.tensors import tensor_specs

ROWS = 1024  # rows generated at a time


def bench_config(layers: int, experts: int, vocab: int) -> dict:
    cfg = json.loads(json.dumps(published_config("zai-org/GLM-5-FP8")))
    cfg.update(num_hidden_layers=layers, first_k_dense_replace=1, n_routed_experts=experts,
               num_nextn_predict_layers=0, vocab_size=vocab)
    if "indexer_types" in cfg:
        cfg["indexer_types"] = ["full"] * layers
    if "mlp_layer_types" in cfg:
        cfg["mlp_layer_types"] = ["dense"] + ["sparse"] * (layers - 1)
    return cfg


def _random_rows(dtype: str, rows: int, cols: int, g: torch.Generator) -> torch.Tensor:
    if dtype == "F8_E4M3":
        codes = torch.randint(0, 0x7E, (rows, cols), dtype=torch.uint8, generator=g)  # no NaN codes
        sign = torch.randint(0, 2, (rows, cols), dtype=torch.uint8, generator=g) << 7
        return (codes | sign).view(torch.float8_e4m3fn)
    t = torch.randn(rows, cols, generator=g) * 0.02
    return t.to(torch.float32 if dtype == "F32" else torch.bfloat16)


def write_source(out: Path, cfg: dict, file_bytes: int = 4 * 10**9) -> int:
    """Stream random tensors of ``cfg``'s shapes into FP8 shards + index. Returns bytes written."""
    args = ModelArgs.from_config(cfg)
    entries = []
    for s in tensor_specs(args, mtp=False):
        dtype = {"f8_e4m3": "F8_E4M3", "f32": "F32"}.get(s.dtype, "BF16")
        entries.append((s.name, dtype, tuple(s.shape)))
    groups, size = [[]], 0
    for e in entries:
        n = torch.Size(e[2]).numel() * (1 if e[1] == "F8_E4M3" else 4 if e[1] == "F32" else 2)
        if groups[-1] and size + n > file_bytes:
            groups.append([])
            size = 0
        groups[-1].append(e)
        size += n
    out.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    weight_map, total = {}, 0
    for i, group in enumerate(groups):
        name = f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors"
        w = SafetensorsWriter(out / name, group)
        for tname, dtype, shape in group:
            if tname.endswith("_scale_inv"):
                w.write(torch.rand(shape, generator=g) * 1e-3 + 1e-5)
            elif len(shape) == 2:
                for r in range(0, shape[0], ROWS):
                    w.write(_random_rows(dtype, min(ROWS, shape[0] - r), shape[1], g))
            else:
                w.write(_random_rows(dtype, 1, shape[0], g)[0] if not tname.endswith("norm.weight") else torch.ones(shape, dtype=torch.bfloat16))
            weight_map[tname] = name
        total += w.commit()[0]
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    return total


def dir_bytes(d: Path) -> int:
    return sum(p.stat().st_size for p in d.rglob("*.safetensors"))


def plain_copy(src: Path, dst: Path) -> float:
    dst.mkdir(parents=True)
    t = time.perf_counter()
    for p in sorted(src.glob("*.safetensors")):
        shutil.copyfile(p, dst / p.name)
        fd = os.open(dst / p.name, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    fsync_dir(dst)
    return time.perf_counter() - t


def _tree_rss(pid: int) -> int:
    """Sum of VmRSS (bytes) over ``pid`` and its descendants, from /proc."""
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
            for task in Path(f"/proc/{p}/task").iterdir():
                children = (task / "children").read_text().split()
                stack.extend(int(c) for c in children)
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return total


def timed_convert(argv: list[str]) -> tuple[float, int]:
    """Run `ascend convert ...` as a child; (wall seconds excluding interpreter start, peak tree RSS)."""
    cmd = [sys.executable, "-c", "import time,sys; t=time.perf_counter(); from ascend.cli.main import main; "
           "import torch; sys.stderr.write(f'STARTED {time.perf_counter()-t}\\n'); main(sys.argv[1:])", "convert", *argv]
    peak = 0
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, _tree_rss(proc.pid))
            time.sleep(0.05)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    t0 = time.perf_counter()
    out, err = proc.communicate()
    wall = time.perf_counter() - t0
    stop.set()
    th.join()
    if proc.returncode != 0:
        raise SystemExit(f"convert failed: {err.strip()}")
    import re

    m = re.search(r"\((\d+\.\d+) GB in (\d+\.\d+) s\)", err)
    seconds = float(m.group(2)) if m else wall  # the converter's own timing (excludes imports)
    return seconds, peak


def run(layers: int, experts: int, vocab: int, workers: int, base: Path, full: bool) -> dict:
    work = Path(tempfile.mkdtemp(prefix="bench-convert-", dir=base))
    try:
        src = work / "src"
        t = time.perf_counter()
        s_bytes = write_source(src, bench_config(layers, experts, vocab))
        print(f"[{layers} layers, {experts} experts] source {s_bytes / 1e9:.2f} GB FP8 written in "
              f"{time.perf_counter() - t:.0f} s", flush=True)
        t_copy = plain_copy(src, work / "copy")
        shutil.rmtree(work / "copy")
        rate = 2 * s_bytes / t_copy
        print(f"  plain copy: {t_copy:.1f} s ({s_bytes / t_copy / 1e9:.2f} GB/s copied)", flush=True)
        res = {"layers": layers, "experts": experts, "source_gb": s_bytes / 1e9, "copy_s": t_copy, "runs": {}}
        # hf files of 0.5 GB: a real 1.5 TB checkpoint has hundreds of ~5 GB files, so per-file
        # parallelism is what the workers get there too
        common = ["--workers", str(workers), "--file-gb", "0.5"]

        def record(name: str, src_dir: Path, out_dir: Path, argv: list[str]) -> None:
            secs, peak = timed_convert(["--src", str(src_dir), "--out", str(out_dir), *argv, *common])
            s_in, s_out = dir_bytes(src_dir), dir_bytes(out_dir)
            floor = (s_in + s_out) / rate
            res["runs"][name] = {"seconds": secs, "in_gb": s_in / 1e9, "out_gb": s_out / 1e9,
                                 "floor_s": floor, "x_floor": secs / floor, "x_copy": secs / t_copy,
                                 "peak_rss_gb": peak / 1e9}
            print(f"  {name:<22} {secs:6.1f} s  {secs / floor:4.2f}x floor ({floor:.1f} s for "
                  f"{(s_in + s_out) / 1e9:.2f} GB I/O), {secs / t_copy:4.2f}x copy, peak RSS {peak / 1e9:.2f} GB",
                  flush=True)

        record("fp8->bf16 hf", src, work / "bf16", ["--precision", "bf16"])
        if full:
            record("fp8->bf16 sharded tp4/ep4", src, work / "sh", ["--precision", "bf16", "--layout", "sharded",
                                                                  "--tp", "4", "--ep", "4"])
            shutil.rmtree(work / "sh")
            record("bf16->w8a8 hf", work / "bf16", work / "w8a8", ["--precision", "w8a8"])
        return res
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, nargs="+", default=[3, 5], help="checkpoint sizes (last one: all scenarios)")
    ap.add_argument("--experts", type=int, default=8)
    ap.add_argument("--vocab", type=int, default=16384)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--dir", default=None, help="where to put the temp checkpoints (default: system temp)")
    ap.add_argument("--json", default=None, help="also write results to this file")
    a = ap.parse_args()
    base = Path(a.dir or tempfile.gettempdir())
    print(f"disk free in {base}: {shutil.disk_usage(base).free / 1e9:.0f} GB; cpus {os.cpu_count()}; "
          f"load {os.getloadavg()[0]:.1f}", flush=True)
    results = [run(n, a.experts, a.vocab, a.workers, base, full=(i == len(a.layers) - 1)) for i, n in enumerate(a.layers)]
    print("\nsummary (targets: fp8->bf16 <= 1.5x floor, sharded <= 2x, w8a8 <= 3x; peak RSS < 1.5 GB and flat)")
    for r in results:
        for name, v in r["runs"].items():
            print(f"  {r['source_gb']:.2f} GB src  {name:<26} {v['x_floor']:.2f}x floor  {v['x_copy']:.2f}x copy  "
                  f"RSS {v['peak_rss_gb']:.2f} GB")
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
