import os
import sys
from pathlib import Path

# Tests never reach the hub and never print download bars.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

sys.path.insert(0, str(Path(__file__).parent))

# The real MultiJail set, as shipped inside the package (so the suite runs in a bare clone).
MULTIJAIL_CSV = Path(__file__).resolve().parents[1] / "src" / "safeswap" / "evaluation" / "data" / "multijail" / "MultiJail.csv"
