"""``ascend convert --from-format mindspore`` and ``ascend verify`` of its outputs, end to end.

Oracles: the same conversion run from the Hugging Face checkpoint the MindSpore one was made
from (byte-identical weight files), and the reference runtime's logits of that HF source.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ascend.cli.main import main
from ascend.errors import BackendUnavailable
from ascend.interop.mindspore.io import require_mindspore

try:
    require_mindspore()
except BackendUnavailable as err:
    pytest.skip(err.line(), allow_module_level=True)

from ms_twin import convert_hf_to_mindspore  # noqa: E402  (after the skip)

FAMILIES = ("deepseek_v3", "deepseek_v32", "glm_moe_dsa", "glm4_moe")
IDS = [5, 17, 99, 3, 250, 7, 1000, 12]


def cli(capsys, *argv) -> tuple[int, str, str]:
    """Run the real CLI in-process: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exc:
        main([*map(str, argv)])
        raise SystemExit(0)
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def weight_hashes(out: Path) -> dict[str, str]:
    files = json.loads((out / "ascend-manifest.json").read_text())["files"]
    return {n: f["sha256"] for n, f in files.items() if n.endswith(".safetensors")}


def files_of(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.is_file() and p.name != "ascend-manifest.json"}


def hf_tensors(d: Path) -> dict[str, bytes]:
    from safetensors.torch import load_file

    out = {}
    for f in sorted(d.glob("*.safetensors")):
        out.update({n: t.contiguous().view(-1).view(torch.uint8).numpy().tobytes() for n, t in load_file(f).items()})
    return out


@pytest.mark.slow
@pytest.mark.parametrize("family,fmt", [(f, "ckpt" if f == "glm4_moe" else "safetensors") for f in FAMILIES])
def test_round_trip_through_ascend_convert(tmp_path, capsys, family, fmt):
    """HF -> ``ascend convert --layout mindspore`` -> ``ascend convert --from-format mindspore`` -> HF.

    The MindSpore output equals ``convert_hf_to_mindspore`` (the plain loop) file for file and
    verifies; the way back is bit-identical to the source, its weight files equal converting the
    HF checkpoint directly, and its reference logits equal the source's."""
    from ascend.reference import compute_logits
    from ascend.tiny.writer import write_tiny_checkpoint

    src = write_tiny_checkpoint(tmp_path / "hf", family, seed=5)
    ms = tmp_path / "ms"
    code, _, err = cli(capsys, "convert", "--src", src, "--out", ms, "--precision", "bf16", "--layout", "mindspore",
                       "--ms-format", fmt, "--file-gb", 0.0002)
    assert code == 0, err
    convert_hf_to_mindspore(src, tmp_path / "oracle", format=fmt, max_file_bytes=200_000)
    got, want = files_of(ms), files_of(tmp_path / "oracle")
    assert len([n for n in want if n.endswith("." + fmt)]) > 1 and "param_name_map.json" in want
    assert sorted(got) == sorted(want) and [n for n in want if got[n] != want[n]] == []
    code, out, err = cli(capsys, "verify", ms, "--json")
    report = json.loads(out)
    assert code == 0 and report["ok"] and report["tensors_checked"] == report["tensors_total"] > 0, (report, err)

    code, _, err = cli(capsys, "convert", "--src", ms, "--from-format", "mindspore",
                       "--out", tmp_path / "from-ms", "--precision", "bf16")
    assert code == 0, err
    code, _, err = cli(capsys, "convert", "--src", src, "--out", tmp_path / "from-hf", "--precision", "bf16")
    assert code == 0, err
    back, orig = hf_tensors(tmp_path / "from-ms"), hf_tensors(src)
    assert sorted(back) == sorted(orig) and [n for n in orig if back[n] != orig[n]] == []
    hashes = weight_hashes(tmp_path / "from-ms")
    assert hashes and hashes == weight_hashes(tmp_path / "from-hf")
    manifest = json.loads((tmp_path / "from-ms" / "ascend-manifest.json").read_text())
    assert manifest["options"]["source_format"] == "mindspore"
    assert not (tmp_path / "from-ms" / "param_name_map.json").exists()
    assert (tmp_path / "from-ms" / "tokenizer.json").read_bytes() == (src / "tokenizer.json").read_bytes()
    assert torch.equal(compute_logits(tmp_path / "from-ms", IDS), compute_logits(src, IDS))


@pytest.mark.slow
def test_mindspore_layout_from_fp8_mtp_drop_and_refusals(tmp_path, capsys):
    """Block-FP8 source: dequantized as ``convert_hf_to_mindspore`` does; mtp drop leaves no MTP
    tensor; quantized MindSpore output is refused in one line before anything is written."""
    from ascend.tiny.writer import write_tiny_checkpoint

    src = write_tiny_checkpoint(tmp_path / "hf", "deepseek_v3", fp8=True, seed=2)
    code, _, err = cli(capsys, "convert", "--src", src, "--out", tmp_path / "ms", "--precision", "bf16",
                       "--layout", "mindspore")
    assert code == 0, err
    convert_hf_to_mindspore(src, tmp_path / "oracle")
    got, want = files_of(tmp_path / "ms"), files_of(tmp_path / "oracle")
    assert sorted(got) == sorted(want) and [n for n in want if got[n] != want[n]] == []
    assert "quantization_config" not in json.loads(got["config.json"])

    # verify rebuilds every MindSpore tensor from the source: one changed value (file rewritten and
    # re-recorded in the manifest, so only the numbers check can see it) makes it fail
    from ascend.interop.mindspore.io import read_mindspore, write_mindspore

    victim = sorted((tmp_path / "ms").glob("model-*.safetensors"))[0]
    tensors = dict(read_mindspore(victim))
    name = next(iter(tensors))
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[0] += 1
    size, sha = write_mindspore(victim, tensors)
    manifest_path = tmp_path / "ms" / "ascend-manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["files"][victim.name] = {"size": size, "sha256": sha}
    manifest_path.write_text(json.dumps(manifest))
    code, out, err = cli(capsys, "verify", tmp_path / "ms")
    assert code == 3 and f"{name} (from " in out and "bytes differ from the source" in out, (out, err)

    code, _, err = cli(capsys, "convert", "--src", src, "--out", tmp_path / "drop", "--precision", "bf16",
                       "--layout", "mindspore", "--mtp", "drop")
    assert code == 0, err
    names = json.loads((tmp_path / "drop" / "param_name_map.json").read_text())
    assert names and not [n for n in names if n.startswith("mtp.")]
    assert json.loads((tmp_path / "drop" / "config.json").read_text())["num_nextn_predict_layers"] == 0

    for extra in (("--precision", "w8a8"), ("--precision", "bf16", "--mtp", "export")):
        code, _, err = cli(capsys, "convert", "--src", src, "--out", tmp_path / "no", "--layout", "mindspore", *extra)
        assert code == 2 and err.count("\n") == 1 and err.startswith("error: "), err
    assert not (tmp_path / "no").exists()


@pytest.mark.slow
def test_sharded_and_w8a8_from_mindspore_ckpt_without_config(tmp_path, capsys):
    """MindSpore Transformers training output: .ckpt weights only, config given with --config.
    Sharded TP2/EP2 output runs in the reference runtime with the source's logits; a W8A8 output
    verifies against the MindSpore source (explicitly and through the manifest)."""
    from ascend.reference import compute_logits
    from ascend.tiny.writer import write_tiny_checkpoint

    src = write_tiny_checkpoint(tmp_path / "hf", "glm_moe_dsa", seed=7)
    ms = tmp_path / "ms"
    convert_hf_to_mindspore(src, ms, format="ckpt", max_file_bytes=200_000)
    for f in ms.iterdir():
        if f.suffix != ".ckpt":
            f.unlink()  # weights only: no config.json, no name map, no tokenizer
    code, _, err = cli(capsys, "convert", "--src", ms, "--from-format", "mindspore", "--out", tmp_path / "x",
                       "--precision", "bf16")
    assert code == 2 and err.count("\n") == 1 and "--config" in err, err
    assert not (tmp_path / "x").exists()

    sh = tmp_path / "sh"
    code, _, err = cli(capsys, "convert", "--src", ms, "--from-format", "mindspore", "--config", src / "config.json",
                       "--out", sh, "--precision", "bf16", "--layout", "sharded", "--tp", "2", "--ep", "2")
    assert code == 0, err
    for name in ("tokenizer.json", "chat_template.jinja", "generation_config.json"):  # from --config's dir
        assert (sh / name).read_bytes() == (src / name).read_bytes(), name
    ref = compute_logits(src, IDS)
    got = compute_logits(sh, IDS)  # 2 ranks from ascend-sharding.json
    assert torch.allclose(got, ref, rtol=0, atol=1e-4 * float(ref.abs().max())), float((got - ref).abs().max())
    assert torch.equal(got.argmax(-1), ref.argmax(-1))

    q = tmp_path / "w8a8"
    code, _, err = cli(capsys, "convert", "--src", ms, "--from-format", "mindspore", "--config", src,
                       "--out", q, "--precision", "w8a8", "--w8a8-scheme", "dynamic", "--workers", "2")
    assert code == 0, err
    for argv in (("verify", q, "--against", ms, "--json"), ("verify", q, "--json")):
        code, out, err = cli(capsys, *argv)
        assert code == 0, (argv, out, err)
        report = json.loads(out)
        assert report["ok"] and report["tensors_checked"] == report["tensors_total"] > 0, report
        assert any("MindSpore" in n for n in report["notes"]), report["notes"]

    # a damaged output is caught against the MindSpore source
    victim = sorted(q.glob("*.safetensors"))[0]
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF
    victim.write_bytes(bytes(data))
    code, out, err = cli(capsys, "verify", q, "--against", ms)
    assert code == 3, (out, err)
