"""The host checks of ``ascend doctor``. Each returns findings with a severity and a fix.

Everything goes through a ``Host`` (``host.py``): commands with timeouts, files under a root,
OS facts. Nothing imports torch or torch_npu here; the Python environment is probed in a child
process (a torch_npu without CANN makes ``import torch`` itself fail).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field

from ascend.doctor import pairs
from ascend.doctor.host import LocalHost
from ascend.doctor.parsers import (
    NpuSmiInfo,
    bracket_list,
    in_version_range,
    parse_key_values,
    parse_npu_smi_info,
    release_code,
)

OK, INFO, WARN, ERROR = "ok", "info", "warn", "error"
SEVERITIES = (OK, INFO, WARN, ERROR)

DRIVER_INFO = "/usr/local/Ascend/driver/version.info"
FIRMWARE_INFO = "/usr/local/Ascend/firmware/version.info"
# CANN toolkit install record (vllm-ascend collect_env reads the first); older/newer layouts follow.
TOOLKIT_INFO_GLOBS = (
    "/usr/local/Ascend/ascend-toolkit/latest/*-linux/ascend_toolkit_install.info",
    "/usr/local/Ascend/ascend-toolkit/latest/ascend_toolkit_install.info",
    "/usr/local/Ascend/cann/*-linux/ascend_toolkit_install.info",
)
TOOLKIT_VERSION_CFG = "/usr/local/Ascend/ascend-toolkit/latest/version.cfg"
SET_ENV = "/usr/local/Ascend/ascend-toolkit/set_env.sh"

# Environment read by HCCL / gloo / xLLM for multi-node runs (reference: ascend-ops.md §6, xllm.md §8.3).
HCCL_ENV = (
    "HCCL_IF_IP", "HCCL_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME", "TP_SOCKET_IFNAME", "HCCL_IF_BASE_PORT",
    "HCCL_CONNECT_TIMEOUT", "HCCL_EXEC_TIMEOUT", "HCCL_BUFFSIZE", "HCCL_OP_EXPANSION_MODE",
    "ASCEND_RT_VISIBLE_DEVICES", "RANK_TABLE_FILE",
)
IFNAME_VARS = ("HCCL_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME", "TP_SOCKET_IFNAME")

PYTHON_PROBE = r"""
import importlib.metadata as md, importlib.util, json, sys
out = {"python": sys.version.split()[0]}
for key, names in (("torch", ("torch",)), ("torch_npu", ("torch-npu", "torch_npu"))):
    out[key] = None
    for name in names:
        try:
            out[key] = md.version(name)
            break
        except md.PackageNotFoundError:
            pass
out["torch_npu_importable"] = importlib.util.find_spec("torch_npu") is not None
try:
    import torch  # on torch >= 2.5 this also autoloads torch_npu when it is installed
    out["import_torch"] = {"ok": True, "version": torch.__version__}
except BaseException as err:  # the probe reports, never raises
    out["import_torch"] = {"ok": False, "error": (type(err).__name__ + ": " + str(err))[:600]}
print(json.dumps(out))
"""

GIB = 1024**3


@dataclass
class Finding:
    check: str
    severity: str
    message: str
    fix: str | None = None
    data: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Target:
    """What the host is being checked for (from a recipe, or nothing: ``Target()``)."""

    recipe: str | None = None
    chip: str | None = None  # ascend-910b | ascend-a3 | ascend-950 | cpu
    nodes: int = 1
    devices_per_node: int | None = None
    device_memory_mb: int | None = None  # memory per device the plan assumes (chip profile)
    engine: str | None = None  # xllm | cpu
    xllm_binary: str | None = None
    ports: list[int] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)  # serve.env (wins over the shell)
    convert_output: str | None = None
    convert_workers: int | None = None
    output_bytes: int | None = None  # estimated conversion output size
    output_bytes_basis: str | None = None

    @property
    def needs_npu(self) -> bool:
        return bool(self.chip) and self.chip != "cpu"


# ------------------------------------------------------------------------------------------
# NPUs, driver, firmware, CANN


def check_npus(host: LocalHost, target: Target) -> tuple[list[Finding], NpuSmiInfo | None]:
    found: list[Finding] = []
    result = host.run(["npu-smi", "info"])
    has_driver = host.exists(DRIVER_INFO)
    has_devices = bool(host.glob("/dev/davinci[0-9]*"))
    if result is None and not has_driver and not has_devices:
        sev = ERROR if target.needs_npu else INFO
        msg = "no Ascend NPU on this host (no npu-smi, no /dev/davinci*, no driver); NPU checks skipped"
        fix = (
            f"run on a host with {target.chip} NPUs (recipe {target.recipe})" if target.needs_npu
            else "nothing to fix for CPU work (tiny recipes, conversion, the CPU engine)"
        )
        found.append(Finding("npu", sev, msg, fix))
        return found, None
    if result is None:
        found.append(Finding("npu", ERROR, "npu-smi not found although the Ascend driver is installed",
                             "mount or install npu-smi (/usr/local/sbin/npu-smi) — inside containers mount it from the host"))
        return found, None
    if result.returncode != 0:
        text = (result.stdout + result.stderr).strip().splitlines()
        found.append(Finding("npu", ERROR, f"npu-smi info failed (exit {result.returncode}): {text[-1] if text else ''}",
                             "check the driver (dmesg | grep -i davinci), device mounts (/dev/davinci*, /dev/davinci_manager, /dev/devmm_svm, /dev/hisi_hdc) and permissions (HwHiAiUser group)"))
        return found, None
    info = parse_npu_smi_info(result.stdout)
    if not info.chips:
        found.append(Finding("npu", ERROR, "npu-smi info lists no NPUs", "check the driver installation and device mounts"))
        return found, info
    gen = info.generation
    names = sorted({c.name for c in info.chips})
    kind = {"a2": "Atlas A2 (910B)", "a3": "Atlas A3 (2 dies per card)"}.get(gen, "unrecognised chip")
    total_mb = sorted({c.hbm_total_mb for c in info.chips if c.hbm_total_mb})
    found.append(Finding(
        "npu", OK if gen != "unknown" else WARN,
        f"{len(info.chips)} NPU devices ({info.cards} cards, {', '.join(names)}): {kind}"
        + (f", {'/'.join(str(m // 1024) for m in total_mb)} GB HBM each" if total_mb else "")
        + (f"; npu-smi {info.version}" if info.version else ""),
        None if gen != "unknown" else "check the chip name against the supported list (910B*, Ascend910 dual-die A3)",
        {"generation": gen, "devices": len(info.chips), "cards": info.cards, "names": names},
    ))
    unhealthy = [c for c in info.chips if c.health.upper() != "OK"]
    for c in unhealthy:
        found.append(Finding("npu.health", ERROR, f"NPU {c.npu} chip {c.chip} health is {c.health}",
                             f"npu-smi info -t health -i {c.npu}; reset the device or replace the card before launching"))
    if info.processes:
        listed = ", ".join(f"pid {p.pid} {p.name} on NPU {p.npu}/{p.chip} ({p.memory_mb} MB)" for p in info.processes[:8])
        pids = " ".join(str(p) for p in sorted({p.pid for p in info.processes}))
        found.append(Finding("npu.processes", WARN, f"{len(info.processes)} processes hold NPUs: {listed}",
                             f"stop them (kill {pids}) or choose free devices with ASCEND_RT_VISIBLE_DEVICES",
                             {"pids": sorted({p.pid for p in info.processes})}))
    # The recipe's chip and device count against what is here.
    if target.needs_npu:
        want = {"ascend-910b": "a2", "ascend-a3": "a3"}.get(target.chip)
        if want and gen != "unknown" and want != gen:
            found.append(Finding("npu.recipe", ERROR,
                                 f"recipe {target.recipe} is for {target.chip} but this host has {kind}",
                                 "use the recipe for this hardware (A3 recipes count dies: 16 per Atlas 800 A3), or run on the right host"))
        smallest = min((c.hbm_total_mb for c in info.chips if c.hbm_total_mb), default=None)
        if target.device_memory_mb and smallest and smallest < target.device_memory_mb:
            found.append(Finding("npu.recipe", ERROR,
                                 f"recipe {target.recipe} plans with {target.device_memory_mb // 1024} GiB per device; this host's devices have {smallest} MB",
                                 "use a recipe (or chip profile) for this memory size, and re-run `ascend plan`"))
        if target.devices_per_node and len(info.chips) < target.devices_per_node:
            found.append(Finding("npu.recipe", ERROR,
                                 f"recipe {target.recipe} needs {target.devices_per_node} devices per node; this host has {len(info.chips)}",
                                 "lower hardware.devices_per_node / parallel sizes, or use a bigger host"))
    return found, info


def _driver_info(host: LocalHost) -> dict[str, str] | None:
    text = host.read(DRIVER_INFO)
    return parse_key_values(text) if text is not None else None


def check_driver_firmware(host: LocalHost, npu_present: bool) -> tuple[list[Finding], dict | None]:
    found: list[Finding] = []
    drv = _driver_info(host)
    if drv is None:
        if npu_present:
            found.append(Finding("driver", ERROR, f"{DRIVER_INFO} is missing",
                                 "install the Ascend HDK driver, or mount /usr/local/Ascend/driver into the container"))
        return found, None
    version = drv.get("package_version") or drv.get("Version") or "unknown"
    found.append(Finding("driver", OK, f"NPU driver {version} ({drv.get('Innerversion', '?')})", None,
                         {"version": version, "innerversion": drv.get("Innerversion")}))
    fw_text = host.read(FIRMWARE_INFO)
    if fw_text is None:
        found.append(Finding("firmware", WARN, f"{FIRMWARE_INFO} is missing; firmware version unknown",
                             "check with `npu-smi info -t board -i 0`; mount /usr/local/Ascend/firmware in containers"))
        return found, drv
    fw = parse_key_values(fw_text)
    fw_version = fw.get("Version", "unknown")
    ranges = bracket_list(drv.get("compatible_version_fw"))
    sev, fix, note = OK, None, ""
    if ranges:
        inside = False
        for r in ranges:
            lo, _, hi = r.partition(",")
            inside |= in_version_range(fw_version, lo.strip(), hi.strip())
        note = f"; driver accepts firmware {', '.join('[' + r + ']' for r in ranges)}"
        if not inside:
            sev, fix = ERROR, "upgrade the firmware (Ascend-hdk-*-npu-firmware_*.run --full) to a version the driver accepts, then reboot"
    found.append(Finding("firmware", sev, f"NPU firmware {fw_version}{note}", fix, {"version": fw_version}))
    return found, drv


def read_toolkit_info(host: LocalHost) -> tuple[str | None, dict | None]:
    for pattern in TOOLKIT_INFO_GLOBS:
        for path in host.glob(pattern):
            text = host.read(path)
            if text:
                return path, parse_key_values(text)
    return None, None


def check_cann(host: LocalHost, drv: dict | None, npu_present: bool) -> tuple[list[Finding], str | None]:
    found: list[Finding] = []
    path, info = read_toolkit_info(host)
    if info is None:
        cfg = host.read(TOOLKIT_VERSION_CFG)
        if cfg:
            m = re.search(r"toolkit_installed_version=\[[^:\]]*:([^\]]+)\]", cfg)
            version = m.group(1) if m else "unknown"
            found.append(Finding("cann", OK, f"CANN toolkit {version} ({TOOLKIT_VERSION_CFG})", None, {"version": version}))
            return found, version
        sev = ERROR if npu_present else INFO
        found.append(Finding("cann", sev, "CANN toolkit not found (no ascend_toolkit_install.info under /usr/local/Ascend/ascend-toolkit/latest)",
                             "install the CANN toolkit (and the A2/A3 kernels package) for this driver" if npu_present
                             else "only needed on NPU hosts"))
        return found, None
    version = info.get("version", "unknown")
    found.append(Finding("cann", OK, f"CANN toolkit {version} ({info.get('innerversion', '?')}) at {path}", None,
                         {"version": version, "innerversion": info.get("innerversion")}))
    compat = bracket_list(info.get("compatible_version"))
    drv_release = release_code((drv or {}).get("Innerversion"))
    if compat and drv_release:
        if drv_release in compat:
            found.append(Finding("cann.driver", OK, f"CANN {version} lists driver release {drv_release} as compatible"))
        else:
            found.append(Finding("cann.driver", ERROR,
                                 f"CANN {version} is not declared compatible with the installed driver ({drv_release}); it lists {', '.join(compat)}",
                                 "install the driver release the CANN release notes name for this CANN (or a CANN that lists this driver)"))
    env_home = host.env.get("ASCEND_HOME_PATH") or host.env.get("ASCEND_TOOLKIT_HOME")
    if not env_home:
        found.append(Finding("cann.env", WARN, "CANN is installed but its environment is not set (ASCEND_HOME_PATH / ASCEND_TOOLKIT_HOME unset)",
                             f"source {SET_ENV} (and nnal/atb/set_env.sh for xLLM) in the shell that launches the engine"))
    return found, version


# ------------------------------------------------------------------------------------------
# Python: torch / torch_npu


def probe_python(host: LocalHost) -> dict | None:
    result = host.run(["python", "-c", PYTHON_PROBE], timeout_s=max(host.timeout_s, 120.0))
    if result is None or result.returncode != 0:
        return None
    try:
        return json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None


def check_python(host: LocalHost, cann_version: str | None, npu_present: bool) -> list[Finding]:
    probe = probe_python(host)
    if probe is None:
        return [Finding("python", WARN, "could not probe the Python environment (probe failed or timed out)",
                        "run `python -c 'import torch'` by hand to see the error")]
    found: list[Finding] = []
    torch_v, npu_v = probe.get("torch"), probe.get("torch_npu")
    imported = probe.get("import_torch") or {}
    if torch_v is None:
        found.append(Finding("torch", ERROR, "torch is not installed in this Python", "pip install torch (the CPU build on Ascend hosts, matching torch_npu)"))
    if npu_v is None:
        sev = WARN if npu_present else OK
        found.append(Finding("torch_npu", sev,
                             f"torch {torch_v or '-'}; torch_npu not installed" + ("" if npu_present else " (fine on a CPU host)"),
                             "pip install torch-npu==<the release for your CANN and torch> (Ascend/pytorch README)" if npu_present else None,
                             {"torch": torch_v}))
    else:
        need_torch = pairs.torch_for(npu_v)
        if torch_v is not None and pairs.base_version(torch_v) != need_torch:
            choices = ", ".join(pairs.releases_for_cann(cann_version, torch_v)) if cann_version else ""
            found.append(Finding("torch_npu", ERROR,
                                 f"torch {torch_v} with torch_npu {npu_v}: this torch_npu is built for torch {need_torch}",
                                 f"pip install torch=={need_torch} (keep torch_npu {npu_v})"
                                 + (f", or a torch_npu for torch {pairs.base_version(torch_v)} released for CANN {cann_version}: {choices}" if choices else ""),
                                 {"torch": torch_v, "torch_npu": npu_v, "source": pairs.SOURCE}))
        else:
            found.append(Finding("torch_npu", OK, f"torch {torch_v} pairs with torch_npu {npu_v}", None,
                                 {"torch": torch_v, "torch_npu": npu_v}))
        want_cann = pairs.cann_for(npu_v)
        if cann_version is None:
            found.append(Finding("torch_npu.cann", ERROR,
                                 f"torch_npu {npu_v} is installed but CANN is not: `import torch` fails (torch autoloads torch_npu, which needs libhccl.so/libascendcl.so)",
                                 f"install CANN and `source {SET_ENV}`; on a CPU-only host `pip uninstall torch-npu` (or set TORCH_DEVICE_BACKEND_AUTOLOAD=0)"))
        elif want_cann and not pairs.same_cann_release(want_cann, cann_version):
            found.append(Finding("torch_npu.cann", WARN,
                                 f"torch_npu {npu_v} was released for CANN {want_cann}; this host has CANN {cann_version}",
                                 f"use the torch_npu released for CANN {cann_version}: {', '.join(pairs.releases_for_cann(cann_version)) or 'see the Ascend/pytorch README'}"))
        elif want_cann is None:
            found.append(Finding("torch_npu.cann", INFO,
                                 f"torch_npu {npu_v} is not a release in the known table ({pairs.SOURCE}); CANN pairing not checked"))
    if imported and not imported.get("ok"):
        error = imported.get("error", "")
        fix = (f"install CANN and `source {SET_ENV}` before starting Python" if re.search(r"lib(hccl|ascendcl|atb)\S*\.so", error)
               else "reinstall torch and torch_npu as a matching pair (see the torch_npu finding)")
        found.append(Finding("torch.import", ERROR, f"`import torch` fails: {error}", fix))
    elif imported.get("ok") and torch_v:
        found.append(Finding("torch.import", OK, f"`import torch` works ({imported.get('version')})"))
    return found
