"""`ascend-xllm-cpu` (not yet built)."""

import sys


def main() -> None:
    print("ascend-xllm-cpu is not built yet", file=sys.stderr)
    sys.exit(2)
