"""Doctor checks of what a launch needs around the NPUs: the xLLM binary, HCCL environment and
NICs, hostname, ports, disk and RAM (driver, CANN and Python: :mod:`.checks`)."""

from __future__ import annotations

import re
from pathlib import Path

from ascend.checkpoint.files import MANIFEST
from ascend.convert.memory import RUNTIME_BYTES, peak_rss_bytes, worker_bytes
from ascend.doctor.checks import ERROR, GIB, HCCL_ENV, IFNAME_VARS, INFO, OK, WARN, Finding, Target
from ascend.doctor.host import LocalHost, is_routable
from ascend.doctor.parsers import NpuSmiInfo, parse_hccn_ip, parse_hccn_link

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
