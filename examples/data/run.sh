#!/usr/bin/env bash
# Preprocess once, load in milliseconds (seed 004), then mix two stores by stage weights
# (seed 000): synthetic traffic for two cities -> two sample stores -> a release repo whose
# stage mixes them -> the mixture plan -> a PyTorch DataLoader.
# Run it with: make demo   (or: bash examples/data/run.sh)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="${1:-$(mktemp -d)}"
[ $# -ge 1 ] || trap 'rm -rf "$work"' EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1. Raw readings: 7 days of 5-minute traffic at 64 sensors, two cities"
stagewise data synth traffic "$work/raw/beijing" --nodes 64 --steps 2016 --seed 1
stagewise data synth traffic "$work/raw/shanghai" --nodes 64 --steps 2016 --seed 2

step "2. Preprocess once into sample stores (seed 004's flags)"
for city in beijing shanghai; do
  stagewise data preprocess --source "$work/raw/$city/records.parquet" \
    --meta "$work/raw/$city/nodes.csv" --output "$work/stores/$city" \
    --input_len 12 --output_len 12 --train_ratio 0.6 --val_ratio 0.2 --test_ratio 0.2
done

step "3. Again: unchanged source and settings are a cache hit"
stagewise data preprocess --source "$work/raw/beijing/records.parquet" \
  --meta "$work/raw/beijing/nodes.csv" --output "$work/stores/beijing"

step "4. Inspect and verify a store"
stagewise data inspect "$work/stores/beijing" --samples 2
stagewise data verify "$work/stores/beijing"

step "5. A release repo whose stage mixes the two stores 70/30"
python "$here/make_repo.py" "$work/repo" "$work/stores"
stagewise data plan traffic --repo "$work/repo" --head 6

step "6. Train-style loading: a DataLoader with 2 workers over the mixture"
python "$here/load.py" "$work/repo"
