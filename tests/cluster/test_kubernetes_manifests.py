"""`--emit kubernetes`: every object validates against Kubernetes' published OpenAPI schemas
(kubernetes-validate, strict: unknown fields are errors), the LeaderWorkerSet against the CRD
schema of kubernetes-sigs/lws (tests/cluster/data, source and commit inside) and its pod
templates against the core PodTemplateSpec schema, for every shipped recipe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from ascend.cluster.common import node_launcher
from ascend.recipe.registry import builtin_names

kv = pytest.importorskip("kubernetes_validate", reason="pip install '.[test]' (kubernetes-validate)")
jsonschema = pytest.importorskip("jsonschema", reason="pip install '.[test]' (jsonschema)")

K8S_VERSION = "1.32.0"  # what `kubectl` and current clusters speak; LWS needs >= 1.26
LWS = json.loads((Path(__file__).parent / "data" / "lws-v1-openapi-schema.json").read_text())
IMAGE = "registry.example/ascend/xllm:1"


def check_core(obj: dict) -> None:
    kv.validate(obj, K8S_VERSION, strict=True)


def check_lws(obj: dict) -> None:
    jsonschema.validate(obj, LWS["openAPIV3Schema"])
    assert obj["apiVersion"] == f"{LWS['group']}/{LWS['version']}" and obj["kind"] == LWS["kind"]
    # the CRD schema embeds pod templates without rejecting unknown fields: check them as core objects
    tmpl = obj["spec"]["leaderWorkerTemplate"]
    for key in ("leaderTemplate", "workerTemplate"):
        check_core({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"}, "template": tmpl[key]})


def documents(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d is not None]


SERVABLE = [n for n in builtin_names()]


@pytest.mark.parametrize("name", SERVABLE)
def test_serve_manifests_validate(cli, name):
    res = cli("serve", name, "--set", f"serve.image={IMAGE}", "--emit", "kubernetes")
    assert res.code == 0, res.err
    docs = documents(res.out)
    assert [d["kind"] for d in docs] == ["ConfigMap", "LeaderWorkerSet", "Service"]
    config, lws, service = docs
    check_core(config)
    check_lws(lws)
    check_core(service)
    from ascend.recipe import load_recipe

    recipe = load_recipe(name)
    group = lws["spec"]["leaderWorkerTemplate"]
    assert group["size"] == recipe.hardware.nodes
    leader = group["leaderTemplate"]["spec"]
    probe = leader["containers"][0]["readinessProbe"]["httpGet"]
    assert probe == {"path": "/health", "port": recipe.serve.port}
    assert service["spec"]["selector"]["leaderworkerset.sigs.k8s.io/worker-index"] == "0"
    for tmpl in (group["leaderTemplate"], group["workerTemplate"]):
        spec = tmpl["spec"]
        container = spec["containers"][0]
        assert container["image"] == IMAGE
        # the same per-node launcher as the Slurm task, with the LWS worker index as --node
        assert container["command"][-1].endswith(node_launcher('"$LWS_WORKER_INDEX"'))
        if recipe.hardware.chip == "cpu":
            assert container["resources"] == {} and "hostNetwork" not in spec
        else:
            assert container["resources"]["limits"] == {"huawei.com/Ascend910": recipe.hardware.devices_per_node}
            assert spec["hostNetwork"] is True
    carried = yaml.safe_load(config["data"]["recipe.yaml"])
    assert carried["serve"]["image"] == IMAGE and Path(carried["convert"]["output"]).is_absolute()


@pytest.mark.parametrize("name", SERVABLE)
def test_convert_manifests_validate(cli, name):
    res = cli("convert", name, "--set", f"serve.image={IMAGE}", "--emit", "kubernetes", "--nnodes", "3")
    assert res.code == 0, res.err
    docs = documents(res.out)
    static = "w8a8" in name or name == "tiny/glm5-cpu"  # static W8A8: a calibration Job before the parts
    assert [d["kind"] for d in docs] == ["ConfigMap", "Job", "Job"] + ["Job"] * static
    for d in docs:
        check_core(d)
    parts, final = docs[1 + static]["spec"], docs[2 + static]["spec"]
    assert (parts["completionMode"], parts["completions"], parts["parallelism"]) == ("Indexed", 3, 3)
    assert '--node-rank "$JOB_COMPLETION_INDEX" --nnodes 3' in parts["template"]["spec"]["containers"][0]["command"][-1]
    assert final["template"]["spec"]["containers"][0]["command"][-1].endswith("--finalize")


def test_validators_reject_a_wrong_field(cli):
    """The checks above can fail: a misspelt field is refused by both schemas."""
    docs = documents(cli("serve", "glm5/a3x2-bf16", "--set", f"serve.image={IMAGE}", "--emit", "kubernetes").out)
    lws, service = docs[1], docs[2]
    service["spec"]["prots"] = service["spec"].pop("ports")
    with pytest.raises(kv.ValidationError):
        check_core(service)
    lws["spec"]["leaderWorkerTemplate"]["size"] = "two"
    with pytest.raises(jsonschema.ValidationError):
        check_lws(lws)
    lws["spec"]["leaderWorkerTemplate"]["size"] = 2
    lws["spec"]["leaderWorkerTemplate"]["workerTemplate"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    with pytest.raises(kv.ValidationError):
        check_lws(lws)


def test_missing_image_and_undocumented_chip_are_one_line_errors(cli):
    res = cli("serve", "glm5/a3x2-bf16", "--emit", "kubernetes")
    assert res.code == 2 and "serve.image" in res.err and len(res.err.strip().splitlines()) == 1
    res = cli("serve", "glm5/a3x2-bf16", "--set", f"serve.image={IMAGE}", "--set", "hardware.chip=ascend-950",
              "--emit", "kubernetes")
    assert res.code in (2, 3) and res.out == ""


def test_generated_rank_table_travels_in_the_configmap(cli):
    ips = {"10.0.0.11": [f"192.168.1.{i}" for i in range(16)], "10.0.0.12": [f"192.168.2.{i}" for i in range(16)]}
    res = cli("serve", "glm5/a3x2-bf16", "--set", f"serve.image={IMAGE}", "--set", f"serve.device_ips={json.dumps(ips)}",
              "--emit", "kubernetes")
    assert res.code == 0, res.err
    config, lws, _ = documents(res.out)
    table = json.loads(config["data"]["ranktable.json"])
    assert [s["server_id"] for s in table["server_list"]] == list(ips)
    assert [d["device_ip"] for d in table["server_list"][1]["device"]] == ips["10.0.0.12"]
    carried = yaml.safe_load(config["data"]["recipe.yaml"])
    command = lws["spec"]["leaderWorkerTemplate"]["workerTemplate"]["spec"]["containers"][0]["command"][-1]
    # the node script rewrites serve.rank_table: the pod works on a writable copy of the mounted table
    assert f"cp /etc/ascend/ranktable.json {carried['serve']['rank_table']}" in command
    assert not carried["serve"]["rank_table"].startswith("/etc/ascend/")
