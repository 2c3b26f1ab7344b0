"""`ascend plan` end to end: table and JSON agree, exit 3 with computed fixes when it does not fit."""

from __future__ import annotations

import json
import re

RECIPE = """\
name: test-dsv3
model: {family: deepseek_v3, id: deepseek-ai/DeepSeek-V3, source: modelscope, path: /nonexistent/dsv3}
hardware: {chip: ascend-a3, nodes: 1, devices_per_node: 16}
parallel: {dp: 4, ep: 16}
convert:
  output: /nonexistent/out
  precision: {default: w8a8, rules: [{match: "*.kv_b_proj.*", format: bf16}]}
serve: {max_model_len: 16384, max_seqs: 16, max_tokens_per_batch: 4096, memory_utilization: 0.92}
"""


def test_plan_json_and_table_agree(cli, tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(RECIPE)
    js = cli("plan", str(path), "--json")
    assert js.code == 0, js.err
    data = json.loads(js.out)
    assert data["fits"] and data["attention_tp"] == 4 and data["moe_tp"] == 1 and len(data["layout"]) == 16
    rank5 = data["layout"][5]
    assert (rank5["dp_rank"], rank5["attn_tp_rank"], rank5["heads"], rank5["experts"]) == (1, 1, [32, 64], [80, 96])
    human = cli("plan", str(path))
    assert human.code == 0
    tokens = data["kv_tokens_per_dp_group"]
    assert f"{tokens:,} KV-cache tokens per DP group" in human.out
    assert f"{data['device_classes'][0]['kv_tokens']:,}" in human.out
    assert re.search(r"weights total\s*│\s*%.2f" % (data["device_classes"][0]["weights_total_bytes"] / 2**30),
                     human.out)


def test_plan_does_not_fit_exit_3(cli, tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(RECIPE)
    res = cli("plan", str(path), "--set", "serve.max_model_len=1000000", "--json")
    assert res.code == 3
    data = json.loads(res.out)  # JSON still printed, then the error line
    assert not data["fits"] and data["suggestions"]
    assert res.err.startswith("error: deepseek-ai/DeepSeek-V3 does not fit on 16 × ascend-a3")
    assert "try --set serve.max_model_len=" in res.err and "\n" not in res.err.strip()


def test_plan_bad_chip_exit_2(cli, tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(RECIPE)
    res = cli("plan", str(path), "--set", "parallel.ep=3")
    assert res.code == 2 and "error:" in res.err and "Traceback" not in res.err
