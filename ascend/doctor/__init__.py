"""``ascend doctor``: inspect an Ascend host before launch and say what is wrong, with fixes.

``run_doctor(host, target)`` runs every check against a ``Host`` (``LocalHost()`` for this
machine, ``ReplayHost(dir)`` for recorded outputs) and a ``Target`` (``Target()`` for no recipe,
``target_from_recipe(recipe)`` otherwise). Exit status contract: 3 when any finding is an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ascend.doctor.checks import (
    ERROR,
    INFO,
    OK,
    SEVERITIES,
    WARN,
    Finding,
    Target,
    check_cann,
    check_driver_firmware,
    check_npus,
    check_python,
)
from ascend.doctor.host import LocalHost, ReplayHost
from ascend.doctor.host_checks import (
    busy_ports,
    check_disk,
    check_hccl_env,
    check_hccn,
    check_hostname,
    check_ports,
    check_ram,
    check_xllm,
)

__all__ = [
    "ERROR", "INFO", "OK", "SEVERITIES", "WARN", "DoctorReport", "Finding", "LocalHost", "ReplayHost",
    "Target", "busy_ports", "recipe_ports", "run_doctor", "target_from_recipe",
]


@dataclass
class DoctorReport:
    findings: list[Finding] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == ERROR]

    @property
    def exit_code(self) -> int:
        return 3 if self.errors else 0

    def by_check(self, check: str) -> list[Finding]:
        return [f for f in self.findings if f.check == check or f.check.startswith(check + ".")]

    def to_dict(self) -> dict:
        counts = {s: sum(1 for f in self.findings if f.severity == s) for s in SEVERITIES}
        return {"ok": not self.errors, "counts": counts, "findings": [f.to_dict() for f in self.findings]}


def run_doctor(host: LocalHost | None = None, target: Target | None = None) -> DoctorReport:
    host = host or LocalHost()
    target = target or Target()
    report = DoctorReport()
    npu_findings, npu = check_npus(host, target)
    report.findings += npu_findings
    npu_present = npu is not None or host.exists("/usr/local/Ascend/driver/version.info")
    drv_findings, drv = check_driver_firmware(host, npu_present)
    report.findings += drv_findings
    cann_findings, cann_version = check_cann(host, drv, npu_present)
    report.findings += cann_findings
    report.findings += check_python(host, cann_version, npu_present)
    report.findings += check_xllm(host, target)
    report.findings += check_hccl_env(host, target)
    report.findings += check_hccn(host, npu, target)
    report.findings += check_hostname(host, target)
    report.findings += check_ports(host, target)
    report.findings += check_disk(host, target)
    report.findings += check_ram(host, target)
    return report


def estimate_output_bytes(recipe) -> tuple[int | None, str | None]:
    """Conversion output size: every tensor the conversion writes
    (``ascend.models.precision.written_specs``: the tensor table at the format the recipe's
    precision policy and the family's W8A8 scheme give it), sized like the planner sizes weights
    (``ascend.plan.memory.tensor_bytes``). Falls back to the source checkpoint's size."""
    try:
        from ascend.models import model_args_for_recipe, tensor_specs
        from ascend.models.precision import written_specs
        from ascend.plan.memory import tensor_bytes

        args = model_args_for_recipe(recipe.model)
        specs = tensor_specs(args, mtp=recipe.convert.mtp != "drop")
        total = sum(tensor_bytes(spec.shape, fmt, spec.dtype) for spec, fmt in written_specs(args, recipe.precision, specs))
        return total, "tensor table x precision rules x W8A8 scheme"
    except Exception:  # noqa: BLE001 - no config anywhere: fall back to the source size
        pass
    src = Path(recipe.model.path)
    if src.is_dir():
        size = sum(f.stat().st_size for f in src.glob("*.safetensors"))
        if size:
            return size, f"the source checkpoint's size on disk ({src})"
    return None, None


def recipe_ports(recipe) -> list[int]:
    """The ports node 0 of a deployment listens on: each local rank's --port (xLLM's launch
    scripts give rank i port + i; rank 0 serves HTTP there) and rank 0's rendezvous master port."""
    serve = recipe.serve
    return [serve.port + i for i in range(recipe.hardware.devices_per_node or 1)] + [serve.master_port]


def target_from_recipe(recipe, ref: str | None = None) -> Target:
    serve, hw = recipe.serve, recipe.hardware
    ports = recipe_ports(recipe)
    out_bytes, basis = estimate_output_bytes(recipe)
    memory_mb = None
    if hw.chip != "cpu":
        try:
            from ascend.hardware import chip_profile

            memory_mb = chip_profile(hw.chip).memory_bytes // 2**20
        except Exception:  # noqa: BLE001 - unknown chip: the recipe loader reports it
            memory_mb = None
    return Target(
        recipe=ref or recipe.name,
        chip=hw.chip,
        nodes=hw.nodes,
        devices_per_node=hw.devices_per_node,
        device_memory_mb=memory_mb,
        engine=serve.engine,
        xllm_binary=serve.binary if serve.engine == "xllm" else None,
        ports=ports,
        env=dict(serve.env),
        convert_output=recipe.convert.output,
        convert_workers=recipe.convert.workers,
        output_bytes=out_bytes,
        output_bytes_basis=basis,
    )
