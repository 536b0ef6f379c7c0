#!/usr/bin/env bash
# The quickstart, end to end (what `make demo` runs): a data release repo in a temporary
# folder, its status, a stage preview, a manual switch, simulated epochs driving automatic
# switches, and the report. Run it with: make demo   (or: bash examples/quickstart/run.sh)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
repo="$work/data_release_repo"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1. Create a data release repo (seed 000 layout, with small example datasets)"
stagewise release init "$repo"

step "2. Which stage is active, and what would a run train on?"
stagewise stage status --repo "$repo"

step "3. Check every file of the repo"
stagewise stage validate --repo "$repo"

step "4. Preview the finetuning stage: datasets, weights, duplicates, expected samples"
stagewise stage preview finetuning --repo "$repo"

step "5. Switch to finetuning by hand, with a reason, then roll back"
stagewise stage switch finetuning --reason "try the curated data early" --repo "$repo"
stagewise stage rollback --repo "$repo"

step "6. Environment variables switch data without touching the repo"
TRAINING_STAGE=ab_testing AB_VARIANT=variant_b stagewise release resolve --repo "$repo"

step "7. Simulate 120 epochs: the StageController switches stages as conditions hold"
python "$here/simulate.py" "$repo" --epochs 120

step "8. The stage report"
stagewise stage report --repo "$repo" --output "$work/stage_report.md"
cat "$work/stage_report.md"

step "9. The stage_switch events (JSON lines, seed 000's shape)"
cat "$repo/stage_events.jsonl"
