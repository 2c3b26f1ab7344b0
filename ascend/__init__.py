"""ascend-recipes: deploy very large MoE language models on Huawei Ascend clusters."""

__version__ = "0.1.0"
