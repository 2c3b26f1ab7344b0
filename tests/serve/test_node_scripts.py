"""The generated per-node scripts are run, not only read (issue 17).

- every script of every shipped recipe under each release line parses (`bash -n`) and has no
  error-level finding of `shellcheck` (skipped with a message where it is not installed);
- values with shell syntax in them reach the ranks literally;
- two "nodes" on one machine (hosts 127.0.0.1 and 127.0.0.2, both loopback): each node's
  generated script is started with bash, rank 0 serves a chat request, and SIGTERM to the
  scripts stops every rank (no process of either script's session is left).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest
from engine_fixtures import free_port

from ascend.recipe import load_recipe
from ascend.serve.xllm import build_deployment

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted(f"{p.parent.name}/{p.stem}" for p in (ROOT / "recipes").glob("*/*.yaml") if p.parent.name != "_base")
LINES = ("0.9", "0.10", "0.11")


def _deployments(name: str, line: str):
    """The recipe as shipped, with every optional script step on, and for multi-node ones also with
    device IPs (the script then writes the rank table instead of checking for it)."""
    sets = [f'serve.version="{line}"']
    recipe = load_recipe(name, sets)
    yield build_deployment(recipe)
    if recipe.serve.engine == "xllm":  # every optional step of the script on
        yield build_deployment(load_recipe(name, sets + [
            "serve.npu_init=true", "serve.preload=/usr/lib/libjemalloc.so.2", "serve.numactl_cores_per_rank=8",
            "serve.schedule_overlap=true", "serve.graph.enable=true", "serve.eplb.enable=true"]))
    if recipe.hardware.nodes > 1:
        per = recipe.hardware.devices_per_node
        ips = {h: [f"192.168.{n}.{d + 10}" for d in range(per)] for n, h in enumerate(recipe.hardware.hosts)}
        yield build_deployment(load_recipe(name, sets + [f"serve.device_ips={json.dumps(ips)}"]))


def _check_script(text: str, path: Path) -> None:
    path.write_text(text)
    run = subprocess.run(["bash", "-n", str(path)], check=False, capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stderr
    if shutil.which("shellcheck"):
        run = subprocess.run(["shellcheck", "-S", "error", "-s", "bash", str(path)], check=False, capture_output=True,
                             text=True, timeout=60)
        assert run.returncode == 0, run.stdout


@pytest.mark.parametrize("line", LINES)
@pytest.mark.parametrize("name", RECIPES)
def test_every_script_parses(name, line, tmp_path):
    if not shutil.which("shellcheck"):
        print("shellcheck not installed: only `bash -n` runs (apt-get install shellcheck)")
    count = 0
    for dep in _deployments(name, line):
        for node, script in dep.scripts.items():
            _check_script(script, tmp_path / f"node{node}.sh")
            count += 1
    assert count >= 1


def test_shell_syntax_in_values_reaches_the_ranks_literally(tmp_path):
    """`serve.env` values and extra args with quotes, `$(…)` and backticks are data, not code."""
    hostile = f"a'b \"c\" $(touch {tmp_path}/pwned) `touch {tmp_path}/pwned2` ;&|"
    recipe = load_recipe("glm5/a3-w8a8", [f"serve.env={json.dumps({'HOSTILE': hostile})}", "serve.binary=env",
                                          'serve.extra_args=["--model_id=x $(touch y)"]'])
    dep = build_deployment(recipe)
    script = dep.scripts["0"]
    _check_script(script, tmp_path / "node0.sh")
    # `env --model=…` fails at once (env knows no such option): the ranks exit, the script with them
    subprocess.run(["bash", str(tmp_path / "node0.sh")], check=False, cwd=tmp_path, capture_output=True, timeout=60,
                   env={"PATH": os.environ["PATH"], "LOG_DIR": str(tmp_path / "logs")})
    assert not list(tmp_path.glob("pwned*")) and not (tmp_path / "y").exists()
    exported = subprocess.run(["bash", "-c", script.split("LOG_DIR=")[0] + 'printf %s "$HOSTILE"'], check=False,
                              capture_output=True, text=True, timeout=30)
    assert exported.stdout == hostile


# ---- two "nodes" on one machine, through the generated scripts ---------------------------------

@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    from ascend.tiny import scripted

    return scripted.write_scripted_checkpoint(tmp_path_factory.mktemp("scripts") / "scripted", fp8=False, check=False)


def _session_pids(sid: int) -> list[int]:
    """Live processes of session ``sid`` (the script's: it was started in a new session)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":  # fields: state, ppid, pgrp, session
            pids.append(int(entry.name))
    return pids


@pytest.mark.slow
def test_two_nodes_started_by_their_scripts(tmp_path, checkpoint, cli):
    port, master = free_port(), free_port()
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"""
name: two-loopback-nodes
model: {{family: glm_moe_dsa, source: local, path: {checkpoint}}}
hardware: {{chip: cpu, nodes: 2, devices_per_node: 1, hosts: [127.0.0.1, 127.0.0.2]}}
parallel: {{dp: 1, ep: 2}}
convert: {{output: {checkpoint}, layout: hf, mtp: keep}}
serve: {{engine: cpu, version: "0.10", port: {port}, master_port: {master}, max_seqs: 4, max_tokens_per_batch: 256,
         tool_call_parser: glm5, reasoning_parser: glm5}}
""")
    r = cli("serve", str(recipe), "--dry-run", "--json")
    assert r.code == 0, r.err
    scripts = json.loads(r.out)["scripts"]
    assert set(scripts) == {"0", "1"}
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "PYTHONPATH": str(ROOT),
           "NO_PROXY": "*"}
    procs: list[subprocess.Popen] = []
    try:
        for node, text in sorted(scripts.items()):
            path = tmp_path / f"node{node}.sh"
            path.write_text(text)
            procs.append(subprocess.Popen(["bash", str(path)], env={**env, "LOG_DIR": str(tmp_path / f"logs{node}")},
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True))
        deadline, healthy = time.time() + 180, False
        while time.time() < deadline and not healthy:
            dead = [p for p in procs if p.poll() is not None]
            assert not dead, f"a node script exited with {dead[0].returncode}:\n{_logs(tmp_path)}"
            try:
                healthy = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                time.sleep(1)
        assert healthy, "rank 0 never answered /health 200:\n" + _logs(tmp_path)
        ranks = {p.pid: [q for q in _session_pids(p.pid) if q != p.pid] for p in procs}
        assert all(ranks.values()), ranks  # each script runs its rank

        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", timeout=60, max_retries=0)
        model = client.models.list().data[0].id
        answer = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}],
                                                max_tokens=8, temperature=0,
                                                extra_body={"chat_template_kwargs": {"enable_thinking": False}})
        assert answer.choices[0].finish_reason in ("stop", "length") and answer.usage.completion_tokens >= 1

        for p in procs:  # what a user's Ctrl-C / a cluster scheduler does: signal the script
            os.kill(p.pid, signal.SIGTERM)
        for p in procs:
            assert p.wait(timeout=40) == 130, p.stdout.read().decode()
        time.sleep(0.5)
        assert {pid: _session_pids(pid) for pid in ranks} == {pid: [] for pid in ranks}
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait(timeout=10)


def _logs(tmp_path: Path) -> str:
    return "".join(f"\n--- {p}\n{p.read_text()[-2000:]}" for p in sorted(tmp_path.glob("logs*/*.log")))


def test_cpu_engine_multi_node_only_on_loopback():
    """Several CPU "nodes" are a test of the scripts on one machine, never a real cluster."""
    from ascend.errors import AscendError

    two = ["hardware.nodes=2", "hardware.devices_per_node=1"]
    assert load_recipe("tiny/glm5-cpu", two + ["hardware.hosts=[127.0.0.1, 127.0.0.2]"]).hardware.nodes == 2
    with pytest.raises(AscendError, match="CPU engine runs on one machine"):
        load_recipe("tiny/glm5-cpu", two + ["hardware.hosts=[10.0.0.1, 10.0.0.2]"])


def test_a_rank_dying_at_once_stops_the_node_with_its_exit_code(tmp_path):
    """A rank that aborts at start-up (as xLLM does on a bad flag), gone before the script begins
    waiting (rank 0 of 16, the first started), still stops the node's other ranks, and the script
    exits with that rank's code (`wait -n` missed it: it blocked on the others)."""
    fake = tmp_path / "bin" / "xllm"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\ncase "$*" in *"--node_rank=0 "*) exit 3;; esac\nexec sleep 120\n')
    fake.chmod(0o755)
    script = tmp_path / "node0.sh"
    script.write_text(build_deployment(load_recipe("glm5/a3-w8a8", [f"serve.binary={fake}"])).scripts["0"])
    start = time.time()
    proc = subprocess.Popen(["bash", str(script)], env={"PATH": "/usr/bin:/bin", "LOG_DIR": str(tmp_path / "logs")},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        assert proc.wait(timeout=40) == 3
        assert time.time() - start < 30
        time.sleep(0.5)
        assert _session_pids(proc.pid) == []  # the other ranks were stopped
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_ranks_that_finish_before_the_wait_keep_their_exit_code(tmp_path):
    """Ranks that are gone before the script waits (here: all 16 run `true`) are not lost: the
    script exits with their code 0, never `wait -n`'s 127 "no children" (seen in ~1 of 5 runs)."""
    script = build_deployment(load_recipe("glm5/a3-w8a8", ["serve.binary=true"])).scripts["0"]
    env = {"PATH": "/usr/bin:/bin", "LOG_DIR": str(tmp_path)}
    codes = [subprocess.run(["bash", "-c", script], check=False, env=env, capture_output=True, timeout=30).returncode
             for _ in range(20)]
    assert codes == [0] * 20
