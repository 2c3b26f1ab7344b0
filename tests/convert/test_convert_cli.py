"""`ascend convert` / `ascend verify` from the command line: failure modes and crash safety.

Every bad input must end in one `error:` line and exit 2, with no manifest and nothing
half-written recorded as done; a SIGKILLed run, rerun, must give the same bytes as a clean run.
"""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from convert_fixtures import file_of, make_checkpoint

from ascend.checkpoint.files import MANIFEST, STATE_DIR
from ascend.cli.main import main


def cli(capsys, *argv):
    """Run the real CLI in-process. Returns (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exc:
        main([*map(str, argv)])
        raise SystemExit(0)
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def assert_one_line_error(code, err, *words):
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for w in words:
        assert w in lines[0], lines[0]


def assert_nothing_done(out: Path):
    assert not (out / MANIFEST).exists()
    assert not list(out.rglob("*.partial")) if out.exists() else True
    done = out / STATE_DIR / "done"
    for rec in done.glob("*.json") if done.exists() else []:
        r = json.loads(rec.read_text())
        assert (out / r["file"]).stat().st_size == r["size"]  # only complete files are recorded


@pytest.fixture
def src_copy(ckpt_factory, tmp_path):
    def make(family="deepseek_v3", fp8=True):
        d = tmp_path / "src"
        shutil.copytree(ckpt_factory(family, fp8=fp8), d)
        return d

    return make


def test_truncated_source_file(src_copy, tmp_path, capsys):
    src = src_copy()
    shard = file_of(src, "model.layers.1.mlp.gate.weight")
    os.truncate(shard, shard.stat().st_size - 100)
    code, _, err = cli(capsys, "convert", "--src", src, "--out", tmp_path / "o", "--precision", "bf16")
    assert_one_line_error(code, err, "truncated", shard.name)
    assert_nothing_done(tmp_path / "o")


def test_missing_shard(src_copy, tmp_path, capsys):
    src = src_copy()
    shard = file_of(src, "model.embed_tokens.weight")
    shard.unlink()
    code, _, err = cli(capsys, "convert", "--src", src, "--out", tmp_path / "o", "--precision", "w8a8")
    assert_one_line_error(code, err, "missing", shard.name)
    assert_nothing_done(tmp_path / "o")


def test_fp8_tensor_without_scale(src_copy, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    src = src_copy()
    victim = "model.layers.1.mlp.experts.5.down_proj.weight_scale_inv"
    scales_file = file_of(src, victim)
    scales = load_file(str(scales_file))
    del scales[victim]
    save_file(scales, str(scales_file))
    index = json.loads((src / "model.safetensors.index.json").read_text())
    del index["weight_map"][victim]
    (src / "model.safetensors.index.json").write_text(json.dumps(index))
    code, _, err = cli(capsys, "convert", "--src", src, "--out", tmp_path / "o", "--precision", "bf16")
    assert_one_line_error(code, err, "FP8 tensor model.layers.1.mlp.experts.5.down_proj.weight has no")
    assert_nothing_done(tmp_path / "o")


def test_src_that_is_no_checkpoint_directory_says_what_it_is(src_copy, tmp_path, capsys):
    src = src_copy()
    for bad, says in [(src / "config.json", "is a file, not a checkpoint directory"), (tmp_path / "nope", "does not exist"),
                      (tmp_path, "has no config.json")]:
        code, _, err = cli(capsys, "convert", "--src", bad, "--out", tmp_path / "o", "--precision", "bf16")
        assert_one_line_error(code, err, f"{bad} {says}")
    assert_nothing_done(tmp_path / "o")


def test_shape_disagreeing_with_config(src_copy, tmp_path, capsys):
    src = src_copy()
    cfg = json.loads((src / "config.json").read_text())
    cfg["moe_intermediate_size"] += 8
    (src / "config.json").write_text(json.dumps(cfg))
    code, _, err = cli(capsys, "convert", "--src", src, "--out", tmp_path / "o", "--precision", "bf16")
    assert_one_line_error(code, err, "disagrees with its config.json", "implies")
    assert_nothing_done(tmp_path / "o")


def write_recipe(path: Path, src: Path, out: Path, precision: str) -> Path:
    path.write_text(f"""\
name: test-{precision}
model: {{family: deepseek_v3, id: local/tiny, source: local, path: {src}}}
hardware: {{chip: cpu, nodes: 1, devices_per_node: 2}}
parallel: {{dp: 1, ep: 2}}
convert: {{output: {out}, layout: sharded, precision: {{default: {precision}}}, mtp: keep, workers: 1}}
serve: {{engine: cpu}}
""")
    return path


def test_output_dir_from_another_recipe(ckpt_factory, tmp_path, capsys):
    src = ckpt_factory("deepseek_v3", fp8=True)
    out = tmp_path / "o"
    a = write_recipe(tmp_path / "a.yaml", src, out, "bf16")
    b = write_recipe(tmp_path / "b.yaml", src, out, "w8a8")
    b.write_text(b.read_text().replace("default: w8a8}", "default: w8a8, w8a8_scheme: dynamic}"))  # data-free
    code, _, err = cli(capsys, "convert", a)
    assert code == 0, err
    manifest = (out / MANIFEST).read_text()
    assert json.loads(manifest)["recipe_hash"]
    code, _, err = cli(capsys, "convert", b)
    assert_one_line_error(code, err, "made by another recipe", "--force")
    assert (out / MANIFEST).read_text() == manifest  # untouched
    code, _, err = cli(capsys, "convert", a)  # same recipe again: already complete
    assert code == 0 and "already complete" in err
    code, _, err = cli(capsys, "convert", b, "--force")
    assert code == 0, err
    assert json.loads((out / MANIFEST).read_text())["options"]["precision"]["default"] == "w8a8"


def test_no_space_before_start(ckpt_factory, tmp_path, capsys, monkeypatch):
    import ascend.convert.pipeline as pipeline

    monkeypatch.setattr(pipeline, "_free_bytes", lambda path: 1000)
    code, _, err = cli(capsys, "convert", "--src", ckpt_factory("deepseek_v3", fp8=True), "--out", tmp_path / "o",
                       "--precision", "bf16")
    assert_one_line_error(code, err, "not enough space", "GB to write")
    assert_nothing_done(tmp_path / "o")


def test_no_space_mid_write_then_resume(ckpt_factory, tmp_path, capsys, monkeypatch):
    import ascend.checkpoint.safetensors_writer as sio

    class FullDisk:
        """A file that accepts 200 kB, then fails like a full disk."""

        def __init__(self, path):
            self.f = open(path, "wb", buffering=0)
            self.closed = False

        def write(self, data):
            if self.f.tell() + len(data) > 200_000:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.f.write(data)

        def fileno(self):
            return self.f.fileno()

        def finish(self):
            pass

        def close(self):
            self.closed = True
            self.f.close()

    src = ckpt_factory("glm_moe_dsa", fp8=True)
    out = tmp_path / "o"
    args = ["convert", "--src", src, "--out", out, "--precision", "bf16", "--layout", "sharded", "--tp", "2"]
    monkeypatch.setattr(sio, "open_for_write", FullDisk)
    code, _, err = cli(capsys, *args)
    assert_one_line_error(code, err, "no space left", "free space")
    assert_nothing_done(out)
    monkeypatch.undo()
    code, _, err = cli(capsys, *args)
    assert code == 0, err
    code, stdout, err = cli(capsys, "verify", out, "--no-logits")
    assert code == 0, err + stdout


def test_verify_exit_3_names_the_file(ckpt_factory, tmp_path, capsys):
    src = ckpt_factory("glm4_moe", fp8=True)
    out = tmp_path / "o"
    assert cli(capsys, "convert", "--src", src, "--out", out, "--precision", "bf16")[0] == 0
    f = next(out.glob("model-*.safetensors"))
    data = bytearray(f.read_bytes())
    data[-3] ^= 0x10
    f.write_bytes(bytes(data))
    code, stdout, err = cli(capsys, "verify", out, "--no-logits")
    assert code == 3
    assert f"FAIL {f.name}: sha256 differs" in stdout and err.startswith("error: verify failed")
    (out / MANIFEST).unlink()
    code, _, err = cli(capsys, "verify", out)
    assert code == 3 and "no ascend-manifest.json" in err


@pytest.mark.slow
def test_sigkill_mid_run_then_rerun_is_byte_identical(tmp_path):
    cfg_src = make_checkpoint(tmp_path / "src", "deepseek_v3", fp8=True, layers=6, experts=16)
    env = {**os.environ, "ASCEND_CONVERT_CHUNK_MB": "1"}
    base = [sys.executable, "-m", "ascend.cli.main", "convert", "--src", str(cfg_src), "--precision", "w8a8",
            "--w8a8-scheme", "dynamic",
            "--file-gb", "0.0002"]
    clean = tmp_path / "clean"
    subprocess.run(base + ["--out", str(clean)], env=env, check=True, capture_output=True, timeout=300)
    files = sorted(p.name for p in clean.glob("*.safetensors"))
    assert len(files) >= 10

    killed = tmp_path / "killed"
    proc = subprocess.Popen(base + ["--out", str(killed)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    done = killed / STATE_DIR / "done"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if done.is_dir() and len(list(done.glob("*.json"))) >= 2:
            break
        time.sleep(0.005)
    assert proc.poll() is None, "conversion finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (killed / MANIFEST).exists()
    finished = len(list(done.glob("*.json")))
    assert 0 < finished < len(files)

    subprocess.run(base + ["--out", str(killed)], env=env, check=True, capture_output=True, timeout=300)
    assert sorted(p.name for p in killed.glob("*.safetensors")) == files
    for name in files + ["quant_model_weights.safetensors.index.json", "quant_model_description.json",
                         "config.json", MANIFEST]:
        assert (killed / name).read_bytes() == (clean / name).read_bytes(), name
    assert not list(killed.rglob("*.partial"))
