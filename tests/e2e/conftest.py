import sys
from pathlib import Path

# Helper modules beside this file (e2e_helpers) import under any pytest --import-mode.
sys.path.insert(0, str(Path(__file__).resolve().parent))
