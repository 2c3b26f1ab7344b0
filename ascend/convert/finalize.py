"""The end of a conversion: side files (tokenizer, chat template), config.json, descriptions,
index, then the manifest, written last (its presence means the output is complete)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from ascend import __version__
from ascend.checkpoint.files import DRAFT_SUBDIR, MANIFEST, MANIFEST_FORMAT, SHARDING_FILE
from ascend.checkpoint.safetensors_io import file_sha256
from ascend.convert.adapters import BOOKKEEPING_FILES, WEIGHT_SUFFIXES, output_layout
from ascend.convert.jobs import ConvertJobs, ConvertOptions, natural_key
from ascend.fileio import write_atomic, write_json

# Files we write ourselves, never copied from the source
OWN_FILES = {"config.json", MANIFEST, SHARDING_FILE, "quant_model_description.json"}


def _copy_side_files(src: Path, dst: Path) -> list[str]:
    """Tokenizer, chat template, generation config, code files: everything but weights and ours."""
    copied = []
    for p in sorted(src.iterdir()):
        if not p.is_file() or p.name.endswith((".safetensors", ".safetensors.index.json", *WEIGHT_SUFFIXES)):
            continue
        if p.name in OWN_FILES or p.name in BOOKKEEPING_FILES or p.name.endswith(".partial"):
            continue
        write_atomic(dst / p.name, p.read_bytes())
        copied.append(p.name)
    return copied


def _side_file_dir(src_dir: str, opts: ConvertOptions) -> Path:
    """Where tokenizer and generation config come from: the source directory, or for a source
    without config.json (MindSpore Transformers output usually holds only weights) the directory
    of --config."""
    src = Path(src_dir)
    src = src if src.is_dir() else src.parent
    if opts.source_config and not (src / "config.json").is_file():
        config = Path(opts.source_config)
        return config.parent if config.is_file() else config
    return src


def _write_small_files(jobs: ConvertJobs, src: Path, dst: Path, records: dict[str, dict]) -> list[str]:
    """Side files, config, descriptions and index of one output dir; returns their names."""
    dst.mkdir(parents=True, exist_ok=True)
    names = _copy_side_files(src, dst) + ["config.json"]
    write_json(dst / "config.json", jobs.config)
    if jobs.quant_description is not None:
        write_json(dst / "quant_model_description.json", jobs.quant_description)
        names.append("quant_model_description.json")
    if jobs.sharding is not None:
        write_json(dst / SHARDING_FILE, {**jobs.sharding, "files": {
            f.name: [{"name": n, "dtype": d, "shape": list(s)} for n, d, s in f.tensors] for f in jobs.files}})
        names.append(SHARDING_FILE)
    layout = output_layout(jobs.options.layout)
    for name, body in (layout.side_files(jobs) if layout else {}).items():  # e.g. another framework's index
        write_json(dst / name, body)
        names.append(name)
    if jobs.index_name is not None:
        names.append(jobs.index_name)
        total = sum(records[f.name]["size"] for f in jobs.files)
        weight_map = {n: f.name for f in jobs.files for n, _, _ in f.tensors}
        write_json(dst / jobs.index_name, {"metadata": {"total_size": total},
                                           "weight_map": dict(sorted(weight_map.items(), key=lambda kv: natural_key(kv[0])))})
    return names


def finalize(jobs: ConvertJobs, src_dir: str, out: Path, digest: str, recipe_hash: str | None,
             records: dict[str, dict]) -> None:
    """Write config, tokenizer, index, descriptions; then the manifest, last. ``records``: every
    weight file's {size, sha256} (relative path -> record)."""
    src = _side_file_dir(src_dir, jobs.options)
    small = _write_small_files(jobs, src, out, records)
    if jobs.draft is not None:
        small += [f"{DRAFT_SUBDIR}/" + n for n in _write_small_files(
            jobs.draft, src, out / DRAFT_SUBDIR, {k[len(DRAFT_SUBDIR) + 1:]: v for k, v in records.items() if k.startswith(f"{DRAFT_SUBDIR}/")})]
    files: dict[str, Any] = {}
    for rel in sorted([*records, *small], key=natural_key):
        if rel in records:
            files[rel] = {"size": records[rel]["size"], "sha256": records[rel]["sha256"]}
        else:
            files[rel] = {"size": (out / rel).stat().st_size, "sha256": file_sha256(out / rel)}
    manifest = {
        "format": MANIFEST_FORMAT,
        "toolkit_version": __version__,
        "recipe_hash": recipe_hash,
        "plan_digest": digest,
        "source": {"path": src_dir, "fingerprint": jobs.source_fingerprint},
        "options": asdict(jobs.options),
        "files": files,
    }
    write_json(out / MANIFEST, manifest)
