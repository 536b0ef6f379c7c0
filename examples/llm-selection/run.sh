#!/usr/bin/env bash
# Seed 001's three-stage data selection on a tiny model, end to end on a CPU:
# data from Python's docstrings (half of it damaged) -> one pipeline that pretrains a tiny
# Qwen2, converts it, warms up the gates, scores every record, keeps the best 25% and
# LoRA-finetunes on them. Run it with: make demo   (or: bash examples/llm-selection/run.sh)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="${1:-$(mktemp -d)}"
[ $# -ge 1 ] || trap 'rm -rf "$work"' EXIT
export STAGEWISE_HOME="$work/.stagewise"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1. Chat records from Python's docstrings: half clean, half damaged, and a target set"
python "$here/make_data.py" "$work/data"

step "2. The pipeline: tiny base -> convert -> warmup -> score -> pick -> finetune"
stagewise run "$here/pipeline.yaml" "here=$here" "data=$work/data" --outputs "$work/outputs"

summarize() {
  python - "$1" <<'PY'
import json, sys
lines = [json.loads(line) for line in open(sys.argv[1])]
clean = sum("_clean_" in line["id"] for line in lines)
print(f"{len(lines)} records kept, {clean} of them clean ({clean / len(lines):.0%}; the pool is 50% clean)")
for line in lines[:5]:
    print(f"  {line['scores']:.3f}  {line['id']}: {line['messages'][-1]['content'][:70]}")
PY
}

step "3. What was kept (selected_data.jsonl, best first)"
summarize "$(find "$work/outputs" -path '*pick*' -name selected_data.jsonl | head -1)"

step "4. The same statistics, every token weighed the same (pick --alpha 0)"
# On this tiny model the seed's perplexity weights (alpha 1) let one surprising token
# decide a record's score; benchmarks/RESULTS.md measures both against perplexity alone.
router="$(find "$work/outputs" -path '*score*' -type d -name router_data | head -1)"
mkdir -p "$work/alpha0" && cp -r "$router" "$work/alpha0/"
stagewise select pick "$work/alpha0" --percentage 0.25 --alpha 0
summarize "$work/alpha0/selected_data.jsonl"

step "5. The finetuned adapters"
ls "$(find "$work/outputs" -type d -name checkpoint-final | head -1)"

step "6. A second run: every task comes from the cache"
stagewise run "$here/pipeline.yaml" "here=$here" "data=$work/data" --outputs "$work/outputs"
