#!/usr/bin/env bash
# Train for real (seed 003 + seed 000): scikit-learn's four bundled datasets -> sample
# stores -> a release repo with a pretraining and a finetuning stage -> one pipeline that
# trains with automatic stage switching, evaluates the best model on all test data and
# registers it. Run it with: make demo   (or: bash examples/quickstart/training/run.sh)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="${1:-$(mktemp -d)}"
[ $# -ge 1 ] || trap 'rm -rf "$work"' EXIT
export STAGEWISE_HOME="$work/.stagewise"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1. scikit-learn's digits, wine, iris and breast cancer as seed 003 JSONL"
python "$here/make_datasets.py" "$work/raw"

step "2. A data release repo: pretraining (all four, weighted), then finetuning"
python "$here/make_release.py" "$work/data_release_repo" "$work/stores"

step "3. The pipeline: prepare -> train (TRAINING_STAGE=auto) -> evaluate -> register"
stagewise run "$here/pipeline.yaml" "here=$here" "work=$work" --outputs "$work/outputs"

step "4. What the trainer printed (per-dataset tables, the stage switch, the best model)"
run_id="$(stagewise runs list --json | python -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')"
stagewise runs logs "$run_id" train > "$work/train.log"
grep -E "TRAIN - OVERALL|发现更好模型" "$work/train.log" | tail -6
grep -E "阶段切换|整体准确率" "$work/train.log"

step "5. The stage switch, as seed 000's event log has it"
grep stage_switch "$work/data_release_repo/stage_events.jsonl" | tail -2

step "6. The full evaluation of the best model"
cat "$(find "$work/outputs" -path '*evaluate*' -name metrics.json | head -1)"
