"""Operators used by the reference models and the CPU engine; ``ascend.ops.moe`` holds the MoE ones."""
