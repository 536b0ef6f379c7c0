"""Drive automatic stage switching with simulated epochs (training arrives in a later release).

    python examples/quickstart/simulate.py REPO --epochs 120

A real training loop does the same: call ``controller.observe`` after every epoch with the
epoch count and metrics, and rebuild its data when the decision says the stage switched.
"""

from __future__ import annotations

import argparse
import math

from stagewise import StageController, open_release


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("repo", help="the data release repo")
    parser.add_argument("--epochs", type=int, default=120)
    parser.add_argument("--run-id", default="quickstart-run")
    args = parser.parse_args()

    release = open_release(args.repo)
    controller = StageController(release, run_id=args.run_id)
    stage = controller.start()
    print(f"epoch   0: training on {stage} ({release.resolve().config_file})")
    for epoch in range(1, args.epochs + 1):
        loss = 2.0 * math.exp(-epoch / 30) + 0.05  # what one epoch of training would report
        accuracy = 1 - loss / 2.1
        decision = controller.observe(
            epoch=epoch, metrics={"loss": round(loss, 4), "accuracy": round(accuracy, 4)}
        )
        if decision.switched:
            stage = decision.to_stage
            config = release.resolve().config_file
            print(
                f"epoch {epoch:3d}: switched {decision.from_stage} -> {stage} ({decision.condition}); now training on {config}"
            )
    print(f"finished {args.epochs} epochs in stage {stage}")


if __name__ == "__main__":
    main()
