"""``ascend-xllm-cpu``: xLLM's command line and HTTP behaviour over the CPU reference model."""
