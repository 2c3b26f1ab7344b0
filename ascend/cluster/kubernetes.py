"""Kubernetes manifests: a LeaderWorkerSet (one pod per node, the leader serves HTTP) with a
Service, and an Indexed Job of conversion parts followed by a finalize Job.

Every pod runs the same per-node launcher as the Slurm tasks (`ascend serve --emit script`,
regenerated in the pod for the addresses of its group), from the resolved recipe mounted from a
ConfigMap. References:
- LeaderWorkerSet v1 API and the env vars it injects (LWS_LEADER_ADDRESS, LWS_GROUP_SIZE,
  LWS_WORKER_INDEX): https://github.com/kubernetes-sigs/lws (config/crd/bases/…leaderworkersets.yaml)
- NPU resource name `huawei.com/Ascend910` advertised by MindCluster's Ascend Device Plugin for the
  Atlas training series (910B / A2 and A3): https://www.hiascend.com/doc_center/source/zh/mindcluster/70rc1/clustersched/dlug/mxdlug_appendices_014.html
"""

from __future__ import annotations

import shlex

import yaml

from ascend.cluster.common import (
    HOSTS_ENV,
    RECIPE_ENV,
    calibrates,
    node_launcher,
    recipe_yaml,
    with_absolute_paths,
)
from ascend.errors import AscendError, ConvertError, ServeError
from ascend.quant.store import CALIBRATION_DIR, GATE
from ascend.recipe.schema import Recipe

NPU_RESOURCE = {"ascend-910b": "huawei.com/Ascend910", "ascend-a3": "huawei.com/Ascend910"}
CONFIG_DIR = "/etc/ascend"  # the ConfigMap: recipe.yaml (and ranktable.json when generated)
# The node script may write the rank table at serve.rank_table, so the pods use a writable copy of
# the ConfigMap's read-only one.
RANK_TABLE = "/tmp/ascend/ranktable.json"
LWS_API = "leaderworkerset.x-k8s.io/v1"

# The group's node addresses, leader first: LWS names worker i `<leader pod>-<i>` in the same
# headless service as the leader, so each resolves once its pod exists (host network: the node IP).
RESOLVE_GROUP = """\
set -euo pipefail
leader="$LWS_LEADER_ADDRESS"; hosts=()
for i in $(seq 0 $((LWS_GROUP_SIZE - 1))); do
  name="$leader"; [ "$i" -eq 0 ] || name="${leader%%.*}-$i.${leader#*.}"
  until ip="$(getent ahostsv4 "$name" | awk 'NR == 1 {print $1}')" && [ -n "$ip" ]; do sleep 2; done
  hosts+=("$ip")
done"""


def serve_manifests(recipe: Recipe, dep) -> str:
    """ConfigMap + LeaderWorkerSet + Service for ``recipe`` (YAML documents)."""
    name = _name(recipe)
    nodes = len(dep.hosts)
    carried = _carried_recipe(recipe, dep)
    data = {"recipe.yaml": recipe_yaml(carried)}
    if dep.rank_table is not None:  # our generator's table, identical on every node
        import json

        data["ranktable.json"] = json.dumps(dep.rank_table, indent=2)
    copy = ([f"mkdir -p {RANK_TABLE.rsplit('/', 1)[0]}", f"cp {CONFIG_DIR}/ranktable.json {RANK_TABLE}"]
            if dep.rank_table is not None else [])
    script = "\n".join([
        RESOLVE_GROUP,
        *copy,
        f'export {HOSTS_ENV}="[$(IFS=,; echo "${{hosts[*]}}")]"',
        f'export {RECIPE_ENV}="$(cat {CONFIG_DIR}/recipe.yaml)"',
        'export LOG_DIR="${LOG_DIR:-/tmp/ascend-logs}"',
        node_launcher('"$LWS_WORKER_INDEX"'),
    ])
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/managed-by": "ascend-recipes"}

    def pod(leader: bool) -> dict:
        container = {
            "name": "engine",
            "image": _image(recipe, ServeError),
            "command": ["bash", "-c", script],
            "resources": _npu_resources(recipe, ServeError),
            "volumeMounts": [{"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
                             {"name": "model", "mountPath": dep.model_dir, "readOnly": True}],
        }
        if leader:
            container["ports"] = [{"name": "http", "containerPort": dep.port}]
            container["readinessProbe"] = {"httpGet": {"path": "/health", "port": dep.port},
                                           "periodSeconds": 10, "failureThreshold": 3}
        spec = {
            "containers": [container],
            "terminationGracePeriodSeconds": 30,  # the node script's stop takes up to 15 s
            "volumes": [{"name": "config", "configMap": {"name": f"{name}-config"}},
                        {"name": "model", "hostPath": {"path": dep.model_dir, "type": "Directory"}}],
        }
        if dep.engine == "xllm":  # HCCL and xLLM bind the node's own address (HCCL_IF_IP, --host)
            spec["hostNetwork"] = True
            spec["dnsPolicy"] = "ClusterFirstWithHostNet"
        return {"metadata": {"labels": dict(labels)}, "spec": spec}

    lws = {
        "apiVersion": LWS_API, "kind": "LeaderWorkerSet",
        "metadata": {"name": name, "labels": dict(labels)},
        "spec": {"replicas": 1, "startupPolicy": "LeaderCreated",
                 "leaderWorkerTemplate": {"size": nodes, "restartPolicy": "RecreateGroupOnPodRestart",
                                          "leaderTemplate": pod(True), "workerTemplate": pod(False)}},
    }
    service = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "labels": dict(labels)},
        "spec": {"selector": {"leaderworkerset.sigs.k8s.io/name": name, "leaderworkerset.sigs.k8s.io/worker-index": "0"},
                 "ports": [{"name": "http", "port": dep.port, "targetPort": dep.port}]},
    }
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"{name}-config", "labels": dict(labels)},
              "data": data}
    header = (f"# {recipe.name}: {dep.world_size} ranks on {nodes} node(s); generated by `ascend serve --emit kubernetes`.\n"
              "# Needs the LeaderWorkerSet controller and, on Ascend, MindCluster's Ascend Device Plugin.\n")
    return header + _dump([config, lws, service])


def convert_manifests(recipe: Recipe, parts: int) -> str:
    """ConfigMap + an Indexed Job of ``parts`` conversion parts + a finalize Job (YAML documents).
    The finalize Job fails until every part is done and is retried by Kubernetes (backoffLimit)."""
    name = _name(recipe, "convert")
    recipe = with_absolute_paths(recipe)
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/managed-by": "ascend-recipes"}
    src, out = recipe.model.path, recipe.convert.output
    volumes = [{"name": "config", "configMap": {"name": f"{name}-config"}},
               {"name": "source", "hostPath": {"path": src, "type": "Directory"}},
               {"name": "output", "hostPath": {"path": out, "type": "DirectoryOrCreate"}}]
    mounts = [{"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
              {"name": "source", "mountPath": src, "readOnly": True}, {"name": "output", "mountPath": out}]

    def job(suffix: str, args: str, extra: dict, before: str = "") -> dict:
        container = {"name": "convert", "image": _image(recipe, ConvertError), "command": ["bash", "-c",
                     f'set -euo pipefail; {before}"${{ASCEND_CLI:-ascend}}" convert {CONFIG_DIR}/recipe.yaml {args}'],
                     "volumeMounts": mounts}
        return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": f"{name}-{suffix}", "labels": dict(labels)},
                "spec": {**extra, "template": {"metadata": {"labels": dict(labels)},
                                               "spec": {"restartPolicy": "Never", "containers": [container],
                                                        "volumes": volumes}}}}

    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"{name}-config", "labels": dict(labels)},
              "data": {"recipe.yaml": recipe_yaml(recipe)}}
    calibration, wait = [], ""
    if calibrates(recipe):  # one calibration Job first; the parts wait for its gate verdict (a failed one: exit 3)
        calibration = [job("calibrate", "--calibrate-only", {"backoffLimit": 2})]
        gate = shlex.quote(f"{out}/{CALIBRATION_DIR}/{GATE}")
        wait = f'until [ -f {gate} ]; do echo "waiting for the calibration Job ({gate})"; sleep 30; done; '
    indexed = job("parts", f'--node-rank "$JOB_COMPLETION_INDEX" --nnodes {parts}',
                  {"completionMode": "Indexed", "completions": parts, "parallelism": parts, "backoffLimit": parts}, wait)
    final = job("finalize", "--finalize", {"backoffLimit": 30})
    header = (f"# {recipe.name}: conversion to {out} in {parts} parts; generated by `ascend convert --emit kubernetes`.\n"
              f"# The paths are hostPath volumes of a filesystem shared by every node: replace them with your PVCs.\n")
    return header + _dump([config, *calibration, indexed, final])


def _carried_recipe(recipe: Recipe, dep) -> Recipe:
    """The recipe the pods load: absolute paths; with the generated rank table, the pod's copy of it."""
    recipe = with_absolute_paths(recipe)
    if dep.rank_table is None:
        return recipe
    return recipe.model_copy(update={"serve": recipe.serve.model_copy(update={"rank_table": RANK_TABLE})})


def _name(recipe: Recipe, kind: str = "") -> str:
    """A DNS-1035 label from the recipe name (LWS pod names append -<group>-<index>)."""
    base = "".join(c if c.isalnum() else "-" for c in recipe.name.lower()).strip("-")
    base = f"ascend-{kind + '-' if kind else ''}{base}"
    return base[:40].rstrip("-")


def _image(recipe: Recipe, error: type[AscendError]) -> str:
    if not recipe.serve.image:
        raise error("--emit kubernetes needs a container image", why="serve.image is not set",
                    fix="set serve.image in the recipe or pass --set serve.image=REGISTRY/IMAGE:TAG")
    return recipe.serve.image


def _npu_resources(recipe: Recipe, error: type[AscendError]) -> dict:
    chip = recipe.hardware.chip
    if chip == "cpu":
        return {}
    if chip not in NPU_RESOURCE:
        raise error(f"no documented Ascend Device Plugin resource name for {chip}",
                    fix="use --emit slurm, or write the manifests by hand for this chip")
    count = recipe.hardware.devices_per_node
    return {"limits": {NPU_RESOURCE[chip]: count}, "requests": {NPU_RESOURCE[chip]: count}}


def _dump(objects: list[dict]) -> str:
    return "---\n".join(yaml.safe_dump(o, sort_keys=False, width=1000) for o in objects)
