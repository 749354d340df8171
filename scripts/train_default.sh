#!/usr/bin/env bash
# Trains the committed default model from nothing, in one command: renders the scenes data,
# runs every stage of the recipe (python/lightcap_train/train.py), evaluates on the test split
# and copies the model directory to models/default. Resumes where it stopped if run again.
#   scripts/train_default.sh                 (extra arguments go to `lightcap_train.recipe.train all`)
#   RUN=runs/other scripts/train_default.sh --set seed=1
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${RUN:-runs/default}
export PYTHONPATH="$PWD/python${PYTHONPATH:+:$PYTHONPATH}"
start=$(date +%s)
.venv/bin/python -m lightcap_train.recipe.train all --run "$RUN" "$@"
rm -rf models/default
mkdir -p models
cp -r "$RUN/model" models/default
echo "train_default: models/default written in $(( ($(date +%s) - start) / 60 )) min (log: $RUN/train.log)"
