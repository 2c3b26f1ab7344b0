"""The host checks of ``ascend doctor``. Each returns findings with a severity and a fix.

Everything goes through a ``Host`` (``host.py``): commands with timeouts, files under a root,
OS facts. Nothing imports torch or torch_npu here; the Python environment is probed in a child
process (a torch_npu without CANN makes ``import torch`` itself fail).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ascend.checkpoint.files import MANIFEST
from ascend.convert.memory import RUNTIME_BYTES, peak_rss_bytes, worker_bytes
from ascend.doctor import pairs
from ascend.doctor.host import LocalHost, is_routable
from ascend.doctor.parsers import (
    NpuSmiInfo,
    bracket_list,
    in_version_range,
    parse_hccn_ip,
    parse_hccn_link,
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


# ------------------------------------------------------------------------------------------
# xLLM, HCCL, network


def check_xllm(host: LocalHost, target: Target) -> list[Finding]:
    candidates: list[tuple[str, str]] = []
    if host.env.get("XLLM_BIN"):
        candidates.append(("XLLM_BIN", host.env["XLLM_BIN"]))
    if target.xllm_binary:
        candidates.append(("serve.binary", target.xllm_binary))
    candidates.append(("PATH", "xllm"))
    for origin, name in candidates:
        path = host.which(name)
        if path:
            result = host.run([path, "--version"], timeout_s=15)
            text = (result.stdout + result.stderr).strip() if result else ""
            version = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
            m = re.search(r"\d+\.\d+(\.\d+)?", version)
            return [Finding("xllm", OK, f"xLLM binary {path} (from {origin})" + (f", version {m.group(0)}" if m else ", version not reported"),
                            None, {"path": path, "version": m.group(0) if m else None})]
    needed = target.engine == "xllm"
    looked = ", ".join(f"{o}={n}" for o, n in candidates)
    return [Finding("xllm", ERROR if needed else INFO,
                    f"xLLM binary not found (looked at {looked})",
                    "install xLLM (release images carry /usr/local/bin/xllm) and set serve.binary or XLLM_BIN; note `pip install xllm` is an unrelated project"
                    if needed else "only needed to serve with engine: xllm")]


def check_hccl_env(host: LocalHost, target: Target) -> list[Finding]:
    env = {**host.env, **target.env}
    found: list[Finding] = []
    present = {k: env[k] for k in HCCL_ENV if env.get(k)}
    found.append(Finding("hccl.env", INFO, "HCCL environment: " + (", ".join(f"{k}={v}" for k, v in present.items()) or "none set"),
                         None, {"env": present}))
    multi = target.nodes > 1
    for var in IFNAME_VARS:
        value = env.get(var)
        if not value:
            if multi:
                found.append(Finding("hccl.env", WARN, f"{var} is not set for a {target.nodes}-node run",
                                     f"export {var}=<the NIC that carries the node IPs> (the same name on every node)"))
            continue
        if value.startswith("^"):  # an exclusion list ("^docker,lo"): nothing to look up
            continue
        for name in value.split(","):
            name = name.strip().lstrip("=")  # "=eth0" asks for an exact match
            if name and not host.exists(f"/sys/class/net/{name}"):
                found.append(Finding("hccl.env", ERROR, f"{var}={value}: no network interface {name!r} on this host",
                                     "set it to an interface shown by `ip -br addr`"))
    buf = env.get("HCCL_BUFFSIZE")
    if buf is not None and not buf.strip().isdigit():
        found.append(Finding("hccl.env", ERROR, f"HCCL_BUFFSIZE={buf!r} is not a number of MB", "e.g. HCCL_BUFFSIZE=200"))
    if multi and env.get("HCCL_OP_EXPANSION_MODE") == "AIV":
        found.append(Finding("hccl.env", WARN, "HCCL_OP_EXPANSION_MODE=AIV is set for a multi-node run",
                             "unset it for multi-node (xLLM's GLM-5 guide does)"))
    timeout = env.get("HCCL_CONNECT_TIMEOUT")
    if multi and timeout and timeout.isdigit() and int(timeout) < 120:
        found.append(Finding("hccl.env", WARN, f"HCCL_CONNECT_TIMEOUT={timeout}s is short for multi-node init",
                             "raise it (recipes use 300-1200)"))
    return found


def check_hccn(host: LocalHost, npu: NpuSmiInfo | None, target: Target) -> list[Finding]:
    if npu is None or not npu.chips:
        return []
    devices = [c.phy_id if c.phy_id is not None else c.npu for c in npu.chips]
    first = host.run(["hccn_tool", "-i", str(devices[0]), "-link", "-g"])
    if first is None:
        return [Finding("hccn", WARN if target.nodes > 1 else INFO, "hccn_tool not found; device NIC link/IP not checked",
                        "mount /usr/local/Ascend/driver/tools/hccn_tool (needed for rank tables and RoCE checks)")]
    found: list[Finding] = []
    down, no_ip, ips = [], [], {}
    for i, dev in enumerate(devices):
        link = first if i == 0 else host.run(["hccn_tool", "-i", str(dev), "-link", "-g"])
        state = parse_hccn_link(link.stdout) if link and link.returncode == 0 else None
        if state != "UP":
            down.append(f"{dev}:{state or 'unknown'}")
        ip_res = host.run(["hccn_tool", "-i", str(dev), "-ip", "-g"])
        ip, _ = parse_hccn_ip(ip_res.stdout) if ip_res and ip_res.returncode == 0 else (None, None)
        if ip:
            ips[str(dev)] = ip
        else:
            no_ip.append(str(dev))
    sev = ERROR if target.nodes > 1 else WARN
    if down:
        found.append(Finding("hccn.link", sev, f"device NIC link not UP on {', '.join(down)}",
                             "check cables/optics and /etc/hccn.conf; `hccn_tool -i N -net_health -g`"))
    else:
        found.append(Finding("hccn.link", OK, f"device NIC link UP on all {len(devices)} devices"))
    if no_ip:
        found.append(Finding("hccn.ip", sev, f"no device IP on devices {', '.join(no_ip)} (rank tables need one per device)",
                             "configure with `hccn_tool -i N -ip -s address A netmask M` (persisted in /etc/hccn.conf)"))
    elif ips:
        found.append(Finding("hccn.ip", OK, f"device IPs: {', '.join(f'{d}={ip}' for d, ip in ips.items())}", None, {"device_ips": ips}))
    return found


def check_hostname(host: LocalHost, target: Target) -> list[Finding]:
    name = host.hostname()
    addrs = host.resolve(name)
    multi = target.nodes > 1
    if not addrs:
        return [Finding("hostname", ERROR if multi else WARN, f"hostname {name!r} does not resolve",
                        f"add `<this node's IP> {name}` to /etc/hosts (xLLM workers resolve it)")]
    routable = [a for a in addrs if is_routable(a)]
    if not routable:
        return [Finding("hostname", ERROR if multi else WARN, f"hostname {name!r} resolves only to {', '.join(addrs)} (loopback)",
                        f"map {name} to the node's cluster IP in /etc/hosts; workers on other nodes cannot reach loopback")]
    return [Finding("hostname", OK, f"hostname {name!r} resolves to {', '.join(routable)}", None, {"addresses": routable})]


def busy_ports(host: LocalHost, ports: list[int]) -> list[str]:
    """``"18080 (pid 12 (python -m http.server))"`` for each of ``ports`` in use, owner when known."""
    busy = []
    for port in sorted(set(ports)):
        if host.port_in_use(port):
            owner = host.port_owner(port)
            busy.append(f"{port} ({owner})" if owner else str(port))
    return busy


def check_ports(host: LocalHost, target: Target) -> list[Finding]:
    if not target.ports:
        return []
    busy = busy_ports(host, target.ports)
    if busy:
        numbers = "|".join(b.split()[0] for b in busy)
        return [Finding("ports", ERROR, f"ports in use: {', '.join(busy)}",
                        f"stop what listens there (ss -ltnp | grep -E ':({numbers})\\b') or change serve.port / serve.master_port")]
    return [Finding("ports", OK, f"ports free: {_port_ranges(target.ports)}")]


def _port_ranges(ports: list[int]) -> str:
    ports = sorted(set(ports))
    out, start, prev = [], ports[0], ports[0]
    for p in ports[1:] + [None]:
        if p is not None and p == prev + 1:
            prev = p
            continue
        out.append(f"{start}-{prev}" if prev != start else str(start))
        if p is not None:
            start = prev = p
    return ", ".join(out)


def check_disk(host: LocalHost, target: Target) -> list[Finding]:
    if not target.convert_output:
        return []
    out = target.convert_output
    if host.data_exists(str(Path(out) / MANIFEST)):
        return [Finding("disk", OK, f"conversion output {out} is already complete (ascend-manifest.json present)")]
    free = host.disk_free(out)
    if free is None:
        return [Finding("disk", WARN, f"cannot tell the free space for {out}", "check with df -h")]
    where, free_bytes = free
    if target.output_bytes is None:
        return [Finding("disk", INFO, f"{free_bytes / GIB:.0f} GiB free at {where}; conversion output size unknown",
                        "put config.json under model.path (or use a known model.id) so the size can be estimated")]
    need = int(target.output_bytes * 1.05)  # index, configs, temp-file headroom
    msg = f"{free_bytes / GIB:.0f} GiB free at {where}; conversion output needs ≈{need / GIB:.0f} GiB ({target.output_bytes_basis})"
    if free_bytes < need:
        return [Finding("disk", ERROR, msg, f"free {(need - free_bytes) / GIB:.0f} GiB or point convert.output at a bigger volume")]
    if free_bytes < need * 1.2:
        return [Finding("disk", WARN, msg, "little headroom: keep 20% spare for logs and a second output")]
    return [Finding("disk", OK, msg)]


def read_meminfo(host: LocalHost) -> tuple[int, int] | None:
    text = host.read("/proc/meminfo")
    if not text:
        return None
    values = {}
    for line in text.splitlines():
        m = re.match(r"(\w+):\s+(\d+)\s*kB", line)
        if m:
            values[m.group(1)] = int(m.group(2)) * 1024
    if "MemTotal" not in values:
        return None
    return values["MemTotal"], values.get("MemAvailable", values.get("MemFree", 0))


def check_ram(host: LocalHost, target: Target) -> list[Finding]:
    """RAM for ``convert.workers`` streaming workers, by the converter's own bound
    (``ascend.convert.memory``): it does not grow with shard or checkpoint size."""
    if not target.convert_workers:
        return []
    mem = read_meminfo(host)
    if mem is None:
        return [Finding("ram", WARN, "cannot read /proc/meminfo", None)]
    total, available = mem
    need = peak_rss_bytes(target.convert_workers)
    per_worker = worker_bytes()
    msg = (f"{available / GIB:.0f} of {total / GIB:.0f} GiB RAM available; {target.convert_workers} conversion workers need "
           f"≈{need / GIB:.1f} GiB (≈{per_worker / GIB:.1f} GiB per worker, streaming)")
    fit = max(1, int((available - RUNTIME_BYTES) // per_worker))
    if need > available:
        return [Finding("ram", ERROR, msg, f"use convert.workers={fit} (--set convert.workers={fit})", {"max_workers": fit})]
    if need > 0.8 * available:
        return [Finding("ram", WARN, msg, f"little headroom; convert.workers={max(1, fit - 1)} is safer")]
    return [Finding("ram", OK, msg)]
