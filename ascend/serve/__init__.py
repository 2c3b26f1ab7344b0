"""Serving: xLLM command lines per version (``xllm``, ``xllm_flags``), HCCL rank tables
(``ranktable``), the launcher (``launch.Service``) and the xLLM-compatible CPU engine
(``cpu_engine``). See docs/serving.md."""
