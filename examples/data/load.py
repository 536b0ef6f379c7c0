"""Load the demo repo's active stage as a mixture and read one epoch with a DataLoader."""

import sys
from collections import Counter

from stagewise.data.torch import MixtureDataset, MixtureLoader
from stagewise.release import open_release
from stagewise.release.loading import load_stage_data

data = load_stage_data(open_release(sys.argv[1]))  # also logs seed 000's loading statistics
print("loading statistics:", data.statistics)
loader = MixtureLoader(
    MixtureDataset(data.plan, data.sources, batch_size=64, seed=0), num_workers=2
)
seen: Counter[str] = Counter()
for step, batch in enumerate(loader):
    if step == 0:
        print("first batch:", {k: tuple(v.shape) for k, v in batch.items()})
    for number in batch["dataset"].tolist():
        seen[data.plan.entries[number].name] += 1
    if step == 4:
        print("resume point after 5 batches:", loader.state_dict())
print(
    "samples per dataset in one epoch:",
    dict(seen),
    "planned:",
    {e.name: e.count for e in data.plan.entries},
)
