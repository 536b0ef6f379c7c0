#!/usr/bin/env bash
# Forecast traffic (seed 003's trainer on seed 004's windows): 15 days of synthetic 5-minute
# traffic at 8 sensors in each of two cities -> two sample stores -> one time-series model
# trained on both -> MAE / RMSE / MAPE on the test split against a last-value and a
# seasonal (same time last week) baseline.
# Run it with: bash examples/traffic/run.sh [WORK_FOLDER]   (about a minute on 2 CPUs)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="${1:-$(mktemp -d)}"
[ $# -ge 1 ] || trap 'rm -rf "$work"' EXIT
mkdir -p "$work"
work="$(cd "$work" && pwd)"
cd "$work"
export STAGEWISE_HOME="$work/.stagewise"
# A model this small trains fastest on one thread; two fight over a 2-CPU machine.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1. Raw readings: 15 days (4,320 five-minute steps) at 8 sensors, two cities"
stagewise data synth traffic raw/beijing --nodes 8 --steps 4320 --seed 1
stagewise data synth traffic raw/shanghai --nodes 8 --steps 4320 --seed 2

step "2. Sample stores: 12 steps in, 12 out; the first 70% of steps train, the last 30% test"
# The test split starts on day 11, so every target has a reading one week earlier (the
# seasonal baseline). Missing readings (2%) take the sensor's previous reading.
for city in beijing shanghai; do
  stagewise data preprocess --source "raw/$city/records.parquet" --meta "raw/$city/nodes.csv" \
    --output "stores/$city" --input_len 12 --output_len 12 \
    --train_ratio 0.7 --val_ratio 0 --test_ratio 0.3 --missing ffill --patch_size 0
done

step "3. Train the time-series model on both cities (seed 003's loop, forecasting metrics)"
stagewise train "$here/train.yaml" --no-resume

step "4. The model against the baselines, on the same test windows and targets"
python "$here/report.py" "$here/train.yaml" --json report.json
