"""The names of the files a merged folder holds, in one place for the writer, the --force rule and the report."""

from __future__ import annotations

import re

from safeswap.read.adapter_config import ADAPTER_CONFIG, ADAPTER_WEIGHTS
from safeswap.read.shards import INDEX_NAME, SIDE_FILES

PLAN_FILENAME = "safeswap-plan.yaml"
CARD_FILENAME = "README.md"
MANIFEST_FILENAME = "safeswap-manifest.json"
SPECIALIZATION_FIGURE, DECISIONS_FIGURE = "specialization.png", "decisions.png"
DIRECTION_FIGURE = "direction.png"
FIGURE_FILES = (SPECIALIZATION_FIGURE, DIRECTION_FIGURE, DECISIONS_FIGURE)
SINGLE_SHARD = "model.safetensors"
_SHARD = re.compile(r"^model-\d{5}-of-\d{5}\.safetensors$")

# Every file a merged folder can hold besides numbered shards (an adapter output: the adapter's two files
# in place of config and shards).
OUTPUT_FILES = frozenset({
    "config.json", *SIDE_FILES, SINGLE_SHARD, INDEX_NAME, PLAN_FILENAME, CARD_FILENAME, MANIFEST_FILENAME, *FIGURE_FILES,
    ADAPTER_CONFIG, ADAPTER_WEIGHTS,
})


def shard_filenames(count: int) -> list[str]:
    """model.safetensors alone, or model-0000i-of-0000n.safetensors as transformers names them."""
    if count == 1:
        return [SINGLE_SHARD]
    return [f"model-{i + 1:05d}-of-{count:05d}.safetensors" for i in range(count)]


def is_output_file(name: str) -> bool:
    """Whether a merge writes files of this name."""
    return name in OUTPUT_FILES or bool(_SHARD.match(name))
