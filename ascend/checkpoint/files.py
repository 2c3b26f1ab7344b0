"""Names of the files and folders in a converted checkpoint directory, each defined once."""

CONFIG = "config.json"
HF_INDEX = "model.safetensors.index.json"
MANIFEST = "ascend-manifest.json"  # written last: its presence means the output is complete
MANIFEST_FORMAT = "ascend-manifest/1"
STATE_DIR = ".ascend-convert"  # resumable conversion state (jobs, per-file records)
SHARDING_FILE = "ascend-sharding.json"  # layout sharded: world, dp, ep and each rank's file
DRAFT_SUBDIR = "mtp"  # mtp export: the MTP draft model xLLM's --draft_model loads
