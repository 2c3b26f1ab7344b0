"""`ascend smoke` end to end against the scripted server: exit codes, table, JSON and JUnit."""

from __future__ import annotations

import json


def test_base_url_mode_writes_reports_and_exits_0(cli, server, tmp_path):
    res = cli("smoke", "--base-url", server.url + "/v1", "--model", server.model, "--max-model-len", "512",
              "--concurrency", "2", "--json", str(tmp_path / "s.json"), "--junit", str(tmp_path / "s.xml"))
    assert res.code == 0, res.err + res.out
    assert "smoke: 13 passed, 0 failed, 0 skipped" in res.out
    data = json.loads((tmp_path / "s.json").read_text())
    assert data["ok"] is True and data["counts"] == {"pass": 13, "fail": 0, "skip": 0}
    assert "<testsuite" in (tmp_path / "s.xml").read_text()


def test_failure_exits_3_with_one_line_error(cli, server):
    server.faults.add("no_done")
    res = cli("smoke", "--base-url", server.url, "--model", server.model, "--checks", "models,stream")
    assert res.code == 3
    assert "error: smoke: 1 passed, 1 failed, 11 skipped" in res.err and "(failed: stream)" in res.err
    assert "[DONE]" in res.out


def test_json_to_stdout_is_only_json(cli, server):
    res = cli("smoke", "--base-url", server.url, "--model", server.model, "--checks", "models", "--json", "-")
    assert res.code == 0
    assert json.loads(res.out)["counts"]["pass"] == 1


def test_recipe_mode_uses_recipe_checks_and_port(cli, server):
    res = cli("smoke", "tiny/glm5-cpu", "--set", f"serve.port={server.port}", "--set", "smoke.checks=[models,chat,thinking]", "--set", "serve.max_model_len=512",  # the fake server's context
              "--model", server.model, "--json", "-")
    assert res.code == 0, res.err
    checks = {c["name"]: c for c in json.loads(res.out)["checks"]}
    assert checks["thinking"]["status"] == "pass"  # the recipe sets a reasoning parser
    assert checks["stream"]["status"] == "skip" and "not selected" in checks["stream"]["detail"]


def test_usage_errors_exit_2(cli):
    assert cli("smoke", "--base-url", "http://127.0.0.1:9").code == 2
    res = cli("smoke", "--base-url", "http://127.0.0.1:9", "--model", "m", "--checks", "chatt")
    assert res.code == 2 and "did you mean 'chat'" in res.err


def test_api_key_is_sent(cli, server):
    server.api_key["key"] = "sekrit"
    res = cli("smoke", "--base-url", server.url, "--model", server.model, "--checks", "models,chat", "--json", "-")
    assert res.code == 3
    models = {c["name"]: c for c in json.loads(res.out)["checks"]}["models"]
    assert "HTTP 401" in models["detail"]
    res = cli("smoke", "--base-url", server.url, "--model", server.model, "--checks", "models,chat,stream",
              "--api-key", "sekrit", "--json", "-")
    assert res.code == 0, res.out


def test_wait_for_readiness(cli, server):
    assert cli("smoke", "--base-url", server.url, "--model", server.model, "--checks", "models", "--wait", "5").code == 0
    res = cli("smoke", "--base-url", "http://127.0.0.1:9", "--model", "m", "--wait", "1")
    assert res.code == 2 and "not ready after 1s" in res.err
