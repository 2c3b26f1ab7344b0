"""HCCL rank tables: generate (A2 format 1.0, A3 format 1.2), parse tool output, validate.

Formats (CANN HCCL user guide, "rank table" pages; reference/xllm.md §8.2):
- A2 (``version: "1.0"``): ``server_list[{server_id, device[{device_id, device_ip, rank_id}]}]``.
- A3 (``version: "1.2"``): the same plus ``host_ip`` per server and ``super_device_id`` per device,
  and ``super_pod_list[{super_pod_id, server_list[{server_id}]}]``.
All values are strings; ``rank_id`` is the global rank. ``"-.-.-.-"`` device IPs (what
``hccn_tool`` prints for an unconfigured NIC) and stale files are the documented failure causes,
so every table, generated or loaded, goes through :func:`validate_rank_table`.
"""

from __future__ import annotations

import ipaddress
import json
import re
from pathlib import Path

from ascend.errors import ServeError

# A2: 1.0. A3: 1.2 for SuperPoD networking (needs super_device_id per die); 1.0 for typical
# networking, which is what xLLM's two-node GLM-5 guide uses on A3.
FORMATS_BY_CHIP = {"ascend-910b": ("1.0",), "ascend-a3": ("1.2", "1.0")}


def rank_table_formats(chip: str) -> tuple[str, ...]:
    try:
        return FORMATS_BY_CHIP[chip]
    except KeyError:
        raise ServeError(
            f"no HCCL rank table format known for hardware.chip {chip!r}",
            fix=f"rank tables are generated for {', '.join(FORMATS_BY_CHIP)}; pass serve.rank_table "
            "pointing at a file you wrote for this chip",
        ) from None


_HCCN_IP = re.compile(r"^\s*ipaddr\s*[:=]\s*(\S+)\s*$", re.MULTILINE)
_SPOD_SDID = re.compile(r"^\s*SDID\s*:\s*(\d+)\s*$", re.MULTILINE | re.IGNORECASE)
_SPOD_ID = re.compile(r"^\s*Super\s*Pod\s*ID\s*:\s*(\d+)\s*$", re.MULTILINE | re.IGNORECASE)


def parse_hccn_ip(text: str, *, source: str = "hccn_tool output") -> str:
    """The device IP from ``hccn_tool -i N -ip -g`` output (lines ``ipaddr:A.B.C.D`` / ``netmask:…``)."""
    match = _HCCN_IP.search(text)
    if not match:
        raise ServeError(f"{source}: no 'ipaddr:' line", fix="save the output of `hccn_tool -i N -ip -g` for each device")
    ip = match.group(1)
    _check_ip(ip, source)
    return ip


def parse_spod_info(text: str, *, source: str = "npu-smi output") -> tuple[str, str]:
    """``(super_device_id, super_pod_id)`` from ``npu-smi info -t spod-info -i N -c C`` output (A3)."""
    sdid, spod = _SPOD_SDID.search(text), _SPOD_ID.search(text)
    if not sdid or not spod:
        raise ServeError(
            f"{source}: no 'SDID' / 'Super Pod ID' lines",
            fix="save the output of `npu-smi info -t spod-info -i <npu> -c <chip>` for each die",
        )
    return sdid.group(1), spod.group(1)


def read_node_device_ips(node_dir: Path, devices: int) -> list[str]:
    """Device IPs of one node from saved files ``<node_dir>/hccn_<dev>.txt`` (one per device)."""
    ips = []
    for dev in range(devices):
        path = Path(node_dir) / f"hccn_{dev}.txt"
        if not path.is_file():
            raise ServeError(
                f"{path}: missing",
                fix=f"on that node run: for i in $(seq 0 {devices - 1}); do hccn_tool -i $i -ip -g > hccn_$i.txt; done",
            )
        ips.append(parse_hccn_ip(path.read_text(), source=str(path)))
    return ips


def _check_ip(ip: str, where: str) -> None:
    if ip.strip() in {"-.-.-.-", ""}:
        raise ServeError(
            f"{where}: device IP is {ip!r} (the NIC has no address)",
            fix="configure it with `hccn_tool -i N -ip -s address A netmask M` and regenerate the rank table",
        )
    try:
        ipaddress.ip_address(ip)
    except ValueError:
        raise ServeError(f"{where}: {ip!r} is not an IP address", fix="use the address printed by `hccn_tool -i N -ip -g`") from None


def build_rank_table(
    chip: str,
    hosts: list[str],
    device_ips: list[list[str]],
    *,
    super_device_ids: list[list[str]] | None = None,
    super_pod_ids: list[str] | None = None,
) -> dict:
    """Rank table for ``len(hosts)`` nodes; ``device_ips[node][local_device]``; ranks node-major.

    On A3, ``super_device_ids[node][die]`` (``SDID`` from ``npu-smi info -t spod-info``) selects the
    SuperPoD format 1.2, with ``super_pod_ids[node]`` (``Super Pod ID`` of the same output; default:
    every node in super pod ``"0"``): nodes of different SuperPoDs are listed in separate
    ``super_pod_list`` entries. Without super device ids the table is format 1.0 (typical networking).
    """
    formats = rank_table_formats(chip)
    version = "1.2" if ("1.2" in formats and super_device_ids is not None) else "1.0"
    if len(device_ips) != len(hosts):
        raise ServeError(f"serve.device_ips lists {len(device_ips)} nodes but hardware.hosts has {len(hosts)}")
    if super_pod_ids is not None and len(super_pod_ids) != len(hosts):
        raise ServeError(f"{len(super_pod_ids)} super pod ids for {len(hosts)} nodes (hardware.hosts)")
    servers, rank = [], 0
    for node, (host, ips) in enumerate(zip(hosts, device_ips)):
        devices = []
        for local, ip in enumerate(ips):
            _check_ip(ip, f"serve.device_ips[{node}][{local}]")
            entry = {"device_id": str(local), "device_ip": ip, "rank_id": str(rank)}
            if version == "1.2":
                entry = {"device_id": str(local), "super_device_id": str(super_device_ids[node][local]),
                         "device_ip": ip, "rank_id": str(rank)}
            devices.append(entry)
            rank += 1
        server = {"server_id": host, "device": devices}
        if version == "1.2":
            server = {"server_id": host, "host_ip": host, "device": devices}
        servers.append(server)
    table: dict = {"version": version, "server_count": str(len(hosts)), "server_list": servers}
    if version == "1.2":
        pods: dict[str, list] = {}  # insertion order: pods in the order their first node appears
        for node, host in enumerate(hosts):
            pods.setdefault(str(super_pod_ids[node]) if super_pod_ids else "0", []).append({"server_id": host})
        table["super_pod_list"] = [{"super_pod_id": pid, "server_list": srv} for pid, srv in pods.items()]
    table["status"] = "completed"
    return table


def validate_rank_table(table: dict, *, chip: str, hosts: list[str], devices_per_node: int, source: str = "rank table") -> None:
    """Raise ServeError unless ``table`` matches the plan: format per chip, hosts, counts, global ranks, IPs."""
    formats = rank_table_formats(chip)
    expected = str(table.get("version"))
    if expected not in formats:
        raise ServeError(
            f"{source}: version {table.get('version')!r}, but {chip} takes format {' or '.join(formats)}",
            fix="regenerate it with `ascend serve RECIPE --dry-run --json` (A2 uses 1.0, A3 uses 1.2)",
        )
    if table.get("status") != "completed":
        raise ServeError(f"{source}: status is {table.get('status')!r}, not 'completed'")
    servers = table.get("server_list") or []
    if str(table.get("server_count")) != str(len(servers)) or len(servers) != len(hosts):
        raise ServeError(
            f"{source}: server_count {table.get('server_count')!r} with {len(servers)} servers, "
            f"but the recipe has {len(hosts)} nodes (hardware.hosts)",
        )
    ranks = []
    for node, server in enumerate(servers):
        sid = server.get("server_id")
        if sid != hosts[node]:
            raise ServeError(f"{source}: server_list[{node}].server_id is {sid!r}, hardware.hosts[{node}] is {hosts[node]!r}",
                             fix="list servers in the order of hardware.hosts")
        devices = server.get("device") or []
        if len(devices) != devices_per_node:
            raise ServeError(f"{source}: server {sid} lists {len(devices)} devices, the plan has "
                             f"{devices_per_node} per node (hardware.devices_per_node)")
        for dev in devices:
            _check_ip(str(dev.get("device_ip", "")), f"{source}: server {sid} device {dev.get('device_id')}")
            if expected == "1.2" and "super_device_id" not in dev:
                raise ServeError(f"{source}: server {sid} device {dev.get('device_id')} has no super_device_id (needed on A3)")
            ranks.append(int(dev.get("rank_id", -1)))
    world = len(hosts) * devices_per_node
    if ranks != list(range(world)):
        raise ServeError(f"{source}: rank_id values must be 0..{world - 1} in node-major order, got {ranks[:8]}…"
                         if len(ranks) > 8 else f"{source}: rank_id values must be 0..{world - 1}, got {ranks}")


def load_rank_table(path: Path, **plan) -> dict:
    """Load and validate a rank table file (``plan``: chip, hosts, devices_per_node)."""
    path = Path(path)
    if path.is_symlink():
        raise ServeError(f"{path}: is a symlink; xLLM refuses symlinked rank tables", fix="copy the file instead")
    try:
        table = json.loads(path.read_text())
    except FileNotFoundError:
        raise ServeError(f"serve.rank_table: {path} does not exist") from None
    except json.JSONDecodeError as err:
        raise ServeError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})", fix="rank tables allow no comments") from None
    validate_rank_table(table, source=str(path), **plan)
    return table


def device_info_from_dir(
    base: str | Path, hosts: list[str], per_node: int,
) -> tuple[list[list[str]], list[list[str]] | None, list[str] | None]:
    """``(device_ips, super_device_ids, super_pod_ids)`` from saved tool outputs, one folder per host:
    ``<base>/<host>/hccn_<dev>.txt`` (``hccn_tool -i <dev> -ip -g``) and optionally (A3, all hosts)
    ``<base>/<host>/spod_<dev>.txt`` (``npu-smi info -t spod-info -i <npu> -c <chip>``); without the
    latter the last two are None. A node's dies must all report the same super pod id."""
    dirs = [Path(base) / h for h in hosts]
    ips = [read_node_device_ips(d, per_node) for d in dirs]
    if not all((d / "spod_0.txt").is_file() for d in dirs):
        return ips, None, None
    sdids, pods = [], []
    for d in dirs:
        infos = []
        for i in range(per_node):
            path = d / f"spod_{i}.txt"
            if not path.is_file():
                raise ServeError(f"{path}: missing",
                                 fix="save `npu-smi info -t spod-info -i <npu> -c <chip>` for every die of every host")
            infos.append(parse_spod_info(path.read_text(), source=str(path)))
        node_pods = sorted({pod for _, pod in infos})
        if len(node_pods) != 1:
            raise ServeError(f"{d}: the dies report different Super Pod IDs {node_pods}; one server sits in one SuperPoD",
                             fix="save the spod-info output again on that host")
        sdids.append([sdid for sdid, _ in infos])
        pods.append(node_pods[0])
    return ips, sdids, pods


# The generated table's default home: absolute and the same on every node whatever directory the
# dry run or the script runs in (it derives from the recipe name alone); /tmp exists and is
# writable on every node and inside every container, and the node script writes the table there
# itself just before starting its ranks, so nothing has to be copied between nodes.
RANK_TABLE_DIR = "/tmp/ascend-recipes"


def default_rank_table_path(recipe_name: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", recipe_name).lstrip(".") or "recipe"
    return f"{RANK_TABLE_DIR}/{safe}/ranktable.json"


def rank_table_for(recipe, device_ips: list[list[str]] | None = None,
                   super_device_ids: list[list[str]] | None = None,
                   super_pod_ids: list[str] | None = None) -> tuple[dict | None, str, bool]:
    """(table or None, path, given) of a multi-node recipe: ``serve.rank_table`` when that file exists
    (``given``: the user's file, which is never rewritten),
    else generated from ``device_ips`` (default ``serve.device_ips``) for the path
    ``serve.rank_table`` (default :func:`default_rank_table_path`); None when no IPs are known
    yet (the node script then refuses to start until the file exists)."""
    hw, serve = recipe.hardware, recipe.serve
    hosts, per_node = list(hw.hosts), hw.devices_per_node
    plan = {"chip": hw.chip, "hosts": hosts, "devices_per_node": per_node}
    given = serve.rank_table
    if given and not Path(given).expanduser().is_absolute():
        raise ServeError(f"serve.rank_table {given!r} is a relative path; every node must find the table at the same path",
                         fix="give an absolute path, or leave serve.rank_table unset to use " + default_rank_table_path(recipe.name))
    if given and Path(given).expanduser().is_file():
        path = Path(given).expanduser()
        return load_rank_table(path, **plan), str(path), True
    ips = device_ips
    if ips is None and serve.device_ips:
        missing = [h for h in hosts if h not in serve.device_ips]
        if missing:
            raise ServeError(f"serve.device_ips has no entry for host {missing[0]}",
                             fix="give every host in hardware.hosts its list of device IPs")
        ips = [serve.device_ips[h] for h in hosts]
    path = str(Path(given).expanduser()) if given else default_rank_table_path(recipe.name)
    if not ips:
        return None, path, False
    ips = [[str(ip) for ip in node] for node in ips]
    for node, node_ips in enumerate(ips):
        if len(node_ips) != per_node:
            raise ServeError(f"serve.device_ips[{node}] lists {len(node_ips)} devices, hardware.devices_per_node is {per_node}")
    table = build_rank_table(hw.chip, hosts, ips, super_device_ids=super_device_ids, super_pod_ids=super_pod_ids)
    validate_rank_table(table, source="generated rank table", **plan)
    return table, path, False
