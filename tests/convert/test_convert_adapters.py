"""The seam of ``ascend.convert.adapters``: convert, its workers, finalize, ``--dry-run`` and
verify reach another format only through its adapters. Stand-in adapters are registered under
the MindSpore names (the options accept no others), so these tests run without MindSpore and
prove that no MindSpore code is on the generic path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors import safe_open
from safetensors.torch import save_file

from ascend.checkpoint.safetensors_io import SafetensorsDir
from ascend.convert import adapters
from ascend.convert.jobs import ConvertJobs, ConvertOptions, OutputFile, Piece
from ascend.convert.pipeline import MANIFEST, conversion_jobs, convert, describe_jobs
from ascend.convert.verify import verify
from ascend.fileio import atomic_path
from ascend.models.args import load_model_args


class ReversedNames:
    """A toy layout: one file, every tensor stored whole under its reversed name."""

    calls: list[str] = []

    def check(self, opts) -> None:
        self.calls.append("check")

    def build_jobs(self, src, args, opts, inv) -> ConvertJobs:
        pieces = [Piece("mindspore", n, [(n[::-1], t.dtype, t.shape)], extra={"from": n})
                  for n, t in sorted(inv.items()) if not t.has_scale]
        return ConvertJobs(opts, [OutputFile("toy.safetensors", pieces)], dict(args.config), None, None, None,
                           source_fingerprint=src.fingerprint())

    def write_file(self, src, path: Path, pieces: list[Piece]) -> tuple[int, str]:
        from ascend.checkpoint.safetensors_io import file_sha256

        self.calls.append("write")
        with atomic_path(path) as tmp:
            save_file({p.outputs[0][0]: src.read(p.extra["from"]) for p in pieces}, str(tmp))
        return path.stat().st_size, file_sha256(path)

    def side_files(self, jobs) -> dict:
        return {"toy-index.json": {n: f.name for f in jobs.files for n, _, _ in f.tensors}}

    def describe(self, opts) -> str:
        return "toy layout"

    def describe_piece(self, p: Piece) -> str:
        return f"reverse {p.extra['from']}"

    def verify(self, out, jobs, src, sampled, report) -> None:
        with safe_open(str(out / "toy.safetensors"), "pt") as f:
            for name, p in ((p.outputs[0][0], p) for p in jobs.files[0].pieces):
                report.tensors_total += 1
                if (jobs.files[0].name, name) in sampled and src is not None:
                    report.tensors_checked += 1
                    if not f.get_tensor(name).equal(src.read(p.extra["from"])):
                        report.problems.append(f"{name} differs")


class PlainSource:
    """A toy source format: a Hugging Face directory, counting how often it is opened."""

    title = "a toy checkpoint"
    opened: list[str] = []

    def load(self, src_dir: Path, opts):
        self.opened.append("load")
        return SafetensorsDir(src_dir), load_model_args(src_dir)

    def open(self, src_dir: str, config):
        self.opened.append("open")
        return SafetensorsDir(src_dir)


@pytest.fixture
def toy(monkeypatch):
    layout, source = ReversedNames(), PlainSource()
    layout.calls, source.opened = [], []
    monkeypatch.setattr(adapters, "_load", lambda ref: layout if ref.endswith(":LAYOUT") else source)
    return layout, source


def test_a_layout_adapter_plans_writes_finalizes_and_verifies(ckpt_factory, tmp_path, toy):
    layout, _ = toy
    src = ckpt_factory("glm_moe_dsa")
    opts = ConvertOptions.from_flags(layout="mindspore")
    text = describe_jobs(conversion_jobs(src, opts), str(src), "out")
    assert "toy layout" in text and "reverse lm_head.weight" in text
    out = tmp_path / "out"
    assert convert(src, out, opts).complete
    assert layout.calls == ["check", "check", "write"]  # dry run, run; one file
    manifest = json.loads((out / MANIFEST).read_text())
    assert {"toy.safetensors", "toy-index.json", "config.json"} <= set(manifest["files"])
    assert "model.safetensors.index.json" not in manifest["files"]
    with safe_open(str(out / "toy.safetensors"), "pt") as f:
        assert f.get_tensor("thgiew.daeh_ml").equal(SafetensorsDir(src).read("lm_head.weight"))
    report = verify(out, against=str(src))
    assert report.ok and report.tensors_checked == report.tensors_total > 0, report.problems


def test_a_source_adapter_feeds_every_layout(ckpt_factory, tmp_path, toy):
    _, source = toy
    src = ckpt_factory("glm_moe_dsa")
    direct = convert(src, tmp_path / "direct", ConvertOptions.from_flags(layout="sharded", tp=2, ep=2))
    via = convert(src, tmp_path / "via", ConvertOptions.from_flags(layout="sharded", tp=2, ep=2, source_format="mindspore"))
    assert direct.complete and via.complete
    assert "load" in source.opened and "open" in source.opened  # planner and worker both went through it
    for rel in direct.files_written:
        assert (tmp_path / "via" / rel).read_bytes() == (tmp_path / "direct" / rel).read_bytes()
    report = verify(tmp_path / "via", against=str(src))
    assert report.ok, report.problems
    assert any("the source is a toy checkpoint" in n for n in report.notes)
