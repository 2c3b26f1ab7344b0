"""`--emit` / `--out` of `ascend serve` and `ascend convert`: forms, files, errors (no scheduler needed)."""

from __future__ import annotations

import subprocess

import yaml

from ascend.cluster.common import node_launcher
from ascend.recipe import load_recipe


def test_emit_script_is_the_dry_run_script_of_that_node(cli):
    dry = cli("serve", "glm5/a3x2-bf16", "--dry-run", "--json")
    import json

    scripts = json.loads(dry.out)["scripts"]
    for node in ("0", "1"):
        res = cli("serve", "glm5/a3x2-bf16", "--node", node, "--emit", "script")
        assert res.code == 0 and res.out == scripts[node]
    res = cli("serve", "glm5/a3x2-bf16", "--emit", "script")
    assert res.code == 2 and "--node" in res.err
    res = cli("serve", "glm5/a3x2-bf16", "--node", "2", "--emit", "script")
    assert res.code == 2 and "--node 2" in res.err


def test_slurm_serve_script(cli, tmp_path):
    out = tmp_path / "serve.sbatch"
    res = cli("serve", "glm5/a3x2-bf16", "--emit", "slurm", "--out", str(out))
    assert res.code == 0 and res.out == "" and f"wrote {out}" in res.err
    text = out.read_text()
    assert subprocess.run(["bash", "-n", str(out)]).returncode == 0
    assert "#SBATCH --nodes=2\n#SBATCH --ntasks-per-node=1\n" in text
    assert 'scontrol show hostnames "$SLURM_JOB_NODELIST"' in text
    assert node_launcher('"$SLURM_NODEID"').replace("'", "'\"'\"'") in text  # inside srun bash -c '…'
    assert 'url="http://${addrs[0]}:18000"' in text  # rank 0 serves on node 0's address
    # the job carries the resolved recipe, --set included
    res = cli("serve", "glm5/a3x2-bf16", "--set", "serve.max_seqs=3", "--emit", "slurm")
    carried = res.out.split("<<'ASCEND_RECIPE'\n", 1)[1].split("\nASCEND_RECIPE\n", 1)[0]
    assert yaml.safe_load(carried)["serve"]["max_seqs"] == 3
    assert load_recipe("glm5/a3x2-bf16", ["serve.max_seqs=3"]).model_dump(mode="json") == yaml.safe_load(carried)


def test_slurm_convert_submit_script(cli):
    res = cli("convert", "glm5/a3-w8a8", "--emit", "slurm", "--nnodes", "4")
    assert res.code == 0
    assert "#SBATCH --array=0-3" in res.out and '--node-rank "$SLURM_ARRAY_TASK_ID" --nnodes 4' in res.out
    assert "--dependency=afterok:$array" in res.out and '"${ASCEND_CLI:-ascend}" convert "$work/recipe.yaml" --finalize' in res.out
    assert subprocess.run(["bash", "-n"], input=res.out, text=True).returncode == 0


def test_static_w8a8_is_calibrated_once_before_the_parts(cli, tmp_path):
    """Before: the parts of a static W8A8 conversion each stopped with exit 2 (no calibration:
    parts never calibrate). Now one --calibrate-only job runs first and the parts depend on it."""
    res = cli("convert", "glm5/a3-w8a8", "--emit", "slurm", "--nnodes", "4")
    calib, array = res.out.index("calib=$(sbatch"), res.out.index("array=$(sbatch")
    assert calib < array and '"$work/recipe.yaml" --calibrate-only' in res.out[calib:array]
    assert "--dependency=afterok:$calib" in res.out[array:].splitlines()[0]
    assert subprocess.run(["bash", "-n"], input=res.out, text=True).returncode == 0
    bf16 = cli("convert", "glm5/a3x2-bf16", "--emit", "slurm", "--nnodes", "2")
    assert bf16.code == 0 and "calibrate" not in bf16.out  # nothing static: no calibration job
    k8s = cli("convert", "glm5/a3-w8a8", "--emit", "kubernetes", "--nnodes", "2", "--set", "serve.image=registry/ascend:1")
    docs = list(yaml.safe_load_all(k8s.out))
    jobs = {d["metadata"]["name"].rsplit("-", 1)[-1]: d for d in docs if d["kind"] == "Job"}
    assert set(jobs) == {"calibrate", "parts", "finalize"}
    assert jobs["calibrate"]["spec"]["template"]["spec"]["containers"][0]["command"][-1].endswith("--calibrate-only")
    part = jobs["parts"]["spec"]["template"]["spec"]["containers"][0]["command"][-1]
    assert part.index("until [ -f ") < part.index("--node-rank") and "calibration/gate.json" in part

    # the job's command, by hand: a calibration and no weights; then refused as a part
    from ascend.tiny.writer import write_tiny_checkpoint

    src = write_tiny_checkpoint(tmp_path / "src", "deepseek_v3", layers=2)
    out = tmp_path / "out"
    res = cli("convert", "--src", str(src), "--out", str(out), "--precision", "w8a8", "--mtp", "drop", "--calibrate-only")
    assert res.code in (0, 3), res.err  # a random tiny model may miss the default gate: exit 3, still calibrated
    assert (out / ".ascend-convert" / "calibration" / "calibration.json").is_file()
    assert not list(out.glob("*.safetensors")) and not (out / "ascend-manifest.json").exists()
    res = cli("convert", "--src", str(src), "--out", str(out), "--precision", "w8a8", "--calibrate-only", "--nnodes", "2")
    assert res.code == 2 and "--calibrate-only" in res.err


def test_emit_errors_are_one_line(cli):
    for args, word in ((("serve", "tiny/glm5-cpu", "--emit", "pbs"), "pbs"),
                       (("serve", "tiny/glm5-cpu", "--out", "x.sh"), "--emit"),
                       (("convert", "tiny/glm5-cpu", "--emit", "script"), "script"),
                       (("convert", "--src", "a", "--out", "b", "--precision", "bf16", "--emit", "slurm"), "recipe")):
        res = cli(*args)
        assert res.code == 2 and word in res.err and len(res.err.strip().splitlines()) == 1, (args, res.err)
