"""``MindSporeSource`` is a drop-in source for the converter (the ``--from-format mindspore``
seam): the converter's own planner and file writer, run on a MindSpore checkpoint, produce
byte-identical files to the same conversion from the Hugging Face checkpoint it came from."""

from __future__ import annotations

import pytest

from ascend.errors import BackendUnavailable
from ascend.interop.mindspore.io import require_mindspore
from ascend.interop.mindspore.layout import MindSporeSource

try:
    require_mindspore()
except BackendUnavailable as err:
    pytest.skip(err.line(), allow_module_level=True)

from ms_twin import convert_hf_to_mindspore  # noqa: E402  (after the skip)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["safetensors", "ckpt"])
def test_converter_output_from_mindspore_equals_output_from_hf(tmp_path, fmt):
    from ascend.checkpoint.safetensors_io import SafetensorsDir
    from ascend.convert.execute import write_file
    from ascend.convert.jobs import ConvertOptions, build_jobs
    from ascend.models.args import load_model_args
    from ascend.tiny.writer import write_tiny_checkpoint

    src = write_tiny_checkpoint(tmp_path / "hf", "glm_moe_dsa", seed=1)
    convert_hf_to_mindspore(src, tmp_path / "ms", format=fmt, max_file_bytes=200_000)
    ms_src, hf_src = MindSporeSource(tmp_path / "ms"), SafetensorsDir(src)
    assert set(ms_src.tensors) == set(hf_src.tensors)
    for opts in (ConvertOptions.from_flags(), ConvertOptions.from_flags(layout="sharded", tp=2, ep=2),
                 ConvertOptions.from_flags(precision="w8a8", w8a8_scheme="dynamic")):
        plan_ms, plan_hf = build_jobs(ms_src, ms_src.args, opts), build_jobs(hf_src, load_model_args(src), opts)
        assert [f.name for f in plan_ms.files] == [f.name for f in plan_hf.files]
        for out in ("a", "b"):
            (tmp_path / out).mkdir(exist_ok=True)
        for f_ms, f_hf in zip(plan_ms.files, plan_hf.files):
            a = write_file(ms_src, tmp_path / "a" / f_ms.name, f_ms.pieces)
            b = write_file(hf_src, tmp_path / "b" / f_hf.name, f_hf.pieces)
            assert a == b, (opts, f_ms.name)  # (size, sha256)
