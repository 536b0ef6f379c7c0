"""Write a one-stage release repo whose datasets are the demo's two sample stores."""

import json
import sys
from pathlib import Path

repo, stores = Path(sys.argv[1]), Path(sys.argv[2]).resolve()
(repo / "stages").mkdir(parents=True, exist_ok=True)
(repo / "stage_config.yaml").write_text(
    "stages:\n"
    "  traffic:\n"
    "    description: two cities, mixed by stage weight\n"
    "    config_file: stages/traffic.json\n"
    "stage_order: [traffic]\n"
    "default_stage: traffic\n"
)
datasets = [
    {"name": "beijing", "path": str(stores / "beijing"), "stage_weight": 0.7, "duplicate": 1},
    {"name": "shanghai", "path": str(stores / "shanghai"), "stage_weight": 0.3, "duplicate": 1},
]
config = {
    "meta": {"stage": "traffic", "stage_config": {"shuffle": True}},
    "dataset_index": datasets,
}
(repo / "stages" / "traffic.json").write_text(json.dumps(config, indent=2))
print(f"wrote {repo}")
