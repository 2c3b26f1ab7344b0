"""`ascend plan --chart FILE`: the memory chart alone, as SVG (no dependency) or PNG (matplotlib)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

from ascend.cli.main import main


def run(capsys, *args):
    with pytest.raises(SystemExit) as exc:
        main(["plan", *args])
    return exc.value.code, capsys.readouterr()


def test_svg_chart_is_valid_xml_with_the_plan_numbers(tmp_path, capsys):
    out = tmp_path / "mem.svg"
    code, _ = run(capsys, "glm5/a3-w8a8", "--chart", str(out))
    assert code in (0, None)
    root = ET.fromstring(out.read_text().split("?>", 1)[1])  # an independent XML parser reads it
    bars = [e for e in root.iter("{http://www.w3.org/2000/svg}rect") if e.get("class") == "bar"]
    assert {b.get("data-part") for b in bars} == {"weights", "KV cache", "HCCL", "workspace", "reserve"}
    assert "capacity 64.0" in out.read_text()


def test_png_chart(tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="matplotlib not installed: PNG chart not checked")
    from PIL import Image

    out = tmp_path / "mem.png"
    code, _ = run(capsys, "glm5/a3-w8a8", "--chart", str(out))
    assert code in (0, None)
    img = Image.open(out).convert("RGB")
    assert img.size[0] >= 600 and (0x4C, 0x72, 0xB0) in {c for _, c in img.getcolors(maxcolors=2**24)}  # weights colour


def test_bad_chart_name_is_exit_2_before_planning(tmp_path, capsys):
    code, out = run(capsys, "glm5/a3-w8a8", "--chart", str(tmp_path / "mem.jpg"))
    assert code == 2 and re.search(r"--chart .*mem.jpg: unknown image type .jpg — name it FILE.png or FILE.svg", out.err)
    assert out.out == ""
