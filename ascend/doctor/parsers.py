"""Parsers for the Ascend host tools' text output (formats as documented and recorded in
``tests/doctor/fixtures``): ``key=value`` version files, ``npu-smi info``, ``hccn_tool``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


def parse_key_values(text: str) -> dict[str, str]:
    """``key=value`` lines (driver/firmware ``version.info``, ``ascend_toolkit_install.info``)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        out[key.strip()] = value.strip()
    return out


def bracket_list(value: str | None) -> list[str]:
    """``[V100R001C17],[V100R001C18]`` -> ['V100R001C17', 'V100R001C18']; ``[7.0.0,7.7.99]`` -> ['7.0.0,7.7.99']."""
    return re.findall(r"\[([^\]]*)\]", value or "")


def release_code(inner_version: str | None) -> str | None:
    """``V100R001C21SPC002B220`` -> ``V100R001C21`` (the release the compatibility lists name)."""
    m = re.match(r"(V\d+R\d+C\d+)", inner_version or "")
    return m.group(1) if m else None


def version_tuple(text: str) -> tuple[int, ...]:
    """Leading numeric components: '7.7.0.1.231' -> (7, 7, 0, 1, 231); '25.0.rc1.1' -> (25, 0)."""
    parts = []
    for piece in text.split("."):
        if not piece.isdigit():
            break
        parts.append(int(piece))
    return tuple(parts)


def in_version_range(version: str, lo: str, hi: str) -> bool:
    """Inclusive range check on the numeric prefix (compared to the range bounds' length)."""
    v, a, b = version_tuple(version), version_tuple(lo), version_tuple(hi)
    if not v or not a or not b:
        return True  # cannot tell: do not claim a mismatch
    return a <= v[: len(a)] and v[: len(b)] <= b


@dataclass
class NpuChip:
    npu: int  # card id (npu-smi "NPU")
    chip: int  # chip within the card
    name: str  # e.g. 910B3, Ascend910
    health: str
    phy_id: int | None = None
    bus_id: str | None = None
    aicore_pct: int | None = None
    hbm_used_mb: int | None = None
    hbm_total_mb: int | None = None


@dataclass
class NpuProcess:
    npu: int
    chip: int
    pid: int
    name: str
    memory_mb: int


@dataclass
class NpuSmiInfo:
    version: str | None = None
    chips: list[NpuChip] = field(default_factory=list)
    processes: list[NpuProcess] = field(default_factory=list)

    @property
    def cards(self) -> int:
        return len({c.npu for c in self.chips})

    @property
    def generation(self) -> str:
        """'a2' (910B1..4, one chip per card), 'a3' (two dies per card), or 'unknown'."""
        names = {c.name for c in self.chips}
        chips_per_card = max((sum(1 for c in self.chips if c.npu == n) for n in {c.npu for c in self.chips}), default=0)
        if names and all(re.fullmatch(r"910B\d?(-\d+)?", n) for n in names):  # 910B3, 910B4-1
            return "a2"
        if chips_per_card == 2 and all(n.startswith("Ascend910") or n.startswith("910") for n in names):
            return "a3"
        return "unknown"


_ROW = re.compile(r"^\|(.*)\|(.*)\|(.*)\|\s*$")
_PAIR = re.compile(r"(\d+)\s*/\s*(\d+)")
_BUS = re.compile(r"^[0-9A-Fa-fx]{4}:[0-9A-Fa-fx]{2}:[0-9A-Fa-fx]{2}\.[0-9A-Fa-fx]$")


def parse_npu_smi_info(text: str) -> NpuSmiInfo:
    """Parse the ``npu-smi info`` table.

    Each chip is two rows: ``| NPU  Name | Health | Power Temp Hugepages |`` then
    ``| Chip [Phy-ID] | Bus-Id | AICore Memory-Usage HBM-Usage |``; A2 prints one chip per card,
    A3 two (dies) per card, the second with ``-`` power. Process rows follow a second header:
    ``| NPU  Chip | Process id | Process name | Process memory(MB) |`` or
    ``| No running processes found in NPU N |``.
    """
    info = NpuSmiInfo()
    m = re.search(r"npu-smi\s+(\S+)", text)
    info.version = m.group(1) if m else None
    pending: tuple[int, str, str] | None = None
    in_processes = False
    for raw in text.splitlines():
        line = raw.rstrip()
        if "Process id" in line and "Process name" in line:
            in_processes = True
            continue
        if not line.startswith("|") or line.startswith("+") or "NPU   Name" in line or line.startswith("| Chip"):
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if in_processes:
            # | 0       0                 | 1774110       | VLLMWorker_PP            | 56684                   |
            if len(cells) >= 4 and re.fullmatch(r"\d+\s+\d+", cells[0]) and cells[1].isdigit():
                npu, chip = (int(x) for x in cells[0].split())
                mem = re.match(r"\d+", cells[3])
                info.processes.append(NpuProcess(npu, chip, int(cells[1]), cells[2], int(mem.group()) if mem else 0))
            continue
        if len(cells) < 3:
            continue
        first = cells[0].split()
        if pending is None:
            # summary row: "0     910B3" | "OK" | "94.2   41   0 / 0"
            if len(first) == 2 and first[0].isdigit() and not _BUS.match(cells[1]):
                pending = (int(first[0]), first[1], cells[1])
            continue
        # detail row: "0 [phy]" | bus id | "aicore  mem_used / mem_total  hbm_used / hbm_total"
        if first and first[0].isdigit() and _BUS.match(cells[1]):
            npu, name, health = pending
            pairs = _PAIR.findall(cells[2])
            aicore = re.match(r"(\d+)", cells[2])
            hbm = pairs[-1] if pairs else None
            info.chips.append(
                NpuChip(
                    npu=npu, chip=int(first[0]), name=name, health=health,
                    phy_id=int(first[1]) if len(first) > 1 and first[1].isdigit() else None,
                    bus_id=cells[1], aicore_pct=int(aicore.group(1)) if aicore else None,
                    hbm_used_mb=int(hbm[0]) if hbm else None, hbm_total_mb=int(hbm[1]) if hbm else None,
                )
            )
        pending = None
    return info


def parse_hccn_link(text: str) -> str | None:
    """``link status: UP`` -> 'UP' (``hccn_tool -i N -link -g``)."""
    m = re.search(r"link status\s*:\s*(\w+)", text, re.IGNORECASE)
    return m.group(1).upper() if m else None


def parse_hccn_ip(text: str) -> tuple[str | None, str | None]:
    """``ipaddr:29.1.1.1`` / ``netmask:255.255.255.0`` -> (ip, mask) (``hccn_tool -i N -ip -g``)."""
    ip = re.search(r"ipaddr\s*:\s*([0-9.]+)", text)
    mask = re.search(r"netmask\s*:\s*([0-9.]+)", text)
    return (ip.group(1) if ip else None, mask.group(1) if mask else None)
