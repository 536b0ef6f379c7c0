#!/usr/bin/env bash
# Seed 002's pipeline of issue 4, run through the CLI as a user would:
#   seed 002's incremental-learning pipeline (its YAML unchanged but for the images),
#      with /mnt/user mounted on a work folder: prepare -> train -> evaluate -> deploy;
#      then new data arrives, the deployed model becomes the base, and the same pipeline
#      trains incrementally from it; then a re-run with nothing changed is all cached.
# Seed 001's three-stage data selection is examples/llm-selection/.
# Run it with: bash examples/three-stage/run.sh [WORK_DIR]   (needs scikit-learn)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="${1:-$(mktemp -d)}"
[ $# -ge 1 ] || trap 'rm -rf "$work"' EXIT
work="$(cd "$work" 2>/dev/null && pwd || { mkdir -p "$work" && cd "$work" && pwd; })"
export STAGEWISE_HOME="$work/.stagewise"   # the run database, kept out of this folder
outputs="$work/outputs"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "0. Raw data: wine rows, their annotations and a test set under $work/user"
python "$here/make_data.py" "$work"

cd "$here"

step "1. Incremental learning, round 1: the seed's YAML with /mnt/user mounted"
# The training task asks for 8 CPUs and a GPU; --fit-resources runs it on what this machine has.
stagewise run incremental-learning.yaml --mount /mnt/user="$work/user" --fit-resources \
  --outputs "$outputs"
python -c "import json,sys; m=json.load(open(sys.argv[1])); print('test accuracy', round(m['accuracy'], 3))" \
  "$work/user/results/evaluation/metrics.json"

step "2. New data arrives; the deployed model becomes the base of an incremental update"
rm -rf "$work/user/models/base"
cp -r "$work/user/models/deployed" "$work/user/models/base"
python "$here/make_data.py" "$work" --round 2
stagewise run incremental-learning.yaml --mount /mnt/user="$work/user" --fit-resources \
  --outputs "$outputs"
python -c "import json,sys; m=json.load(open(sys.argv[1])); print('trained from', m['base_model'], 'for', m['epochs_run'], 'epochs')" \
  "$work/user/models/incremental/model.json"

step "3. The same again: nothing changed, every task is answered from the cache"
stagewise run incremental-learning.yaml --mount /mnt/user="$work/user" --fit-resources \
  --outputs "$outputs"

step "4. The runs, and where their outputs went"
stagewise runs list
find "$work/user/models" "$work/user/results" -name "*.json" | sort
