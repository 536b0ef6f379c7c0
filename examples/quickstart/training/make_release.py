"""Write the quickstart's data release repo (seed 000's layout): two stages over the four
sample stores that the pipeline's prepare tasks write to STORES/<dataset>.

- pretraining (default): all four datasets, weighted 55/15/10/20 (digits has the most
  to learn);
- finetuning: from epoch 8, an even mixture that leans on the small datasets.

    python make_release.py REPO STORES
"""

import json
import sys
from pathlib import Path

repo, stores = Path(sys.argv[1]), Path(sys.argv[2]).resolve()
(repo / "stages").mkdir(parents=True, exist_ok=True)
(repo / "stage_config.yaml").write_text(
    """\
stages:
  pretraining:
    name: "预训练阶段"
    description: all four datasets, weighted
    config_file: stages/pretraining.json
    priority: 1
    auto_switch_conditions:
      - epoch: 0
        condition: "start"
  finetuning:
    name: "微调阶段"
    description: a mixture that leans on the small datasets
    config_file: stages/finetuning.json
    priority: 2
    auto_switch_conditions:
      - epoch: 8
        condition: "pretraining_complete"
default_stage: pretraining
switch_strategy:
  mode: auto
  check_interval: 1
  fallback_stage: pretraining
""",
    encoding="utf-8",
)
# name: (stage_weight, duplicate); duplicate repeats a small dataset so that the epoch is
# not cut to what the smallest one can supply at its weight.
MIXTURES = {
    "pretraining": {
        "digits": (0.55, 1),
        "wine": (0.15, 3),
        "iris": (0.1, 3),
        "breast_cancer": (0.2, 1),
    },
    "finetuning": {
        "digits": (0.25, 1),
        "wine": (0.25, 3),
        "iris": (0.25, 3),
        "breast_cancer": (0.25, 4),
    },
}
for stage, weights in MIXTURES.items():
    config = {
        "meta": {"stage": stage, "stage_config": {"shuffle": True}},
        "dataset_index": [
            {"name": name, "path": str(stores / name), "stage_weight": weight, "duplicate": copies}
            for name, (weight, copies) in weights.items()
        ],
    }
    (repo / "stages" / f"{stage}.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
print(f"wrote {repo}")
