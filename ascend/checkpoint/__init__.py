"""Checkpoint formats and streaming I/O.

- ``fp8``: block-FP8 (e4m3 + ``weight_scale_inv`` per 128×128 block) dequantize / quantize.
- ``w8a8``: msModelSlim W8A8_DYNAMIC per-channel int8 quantize / dequantize.
- ``safetensors_io``: lazy row-range reads of a checkpoint dir (``SafetensorsDir``) and
  incremental atomic writes (``SafetensorsWriter``).

Submodules import torch; import them where needed.
"""
