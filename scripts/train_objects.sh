#!/usr/bin/env bash
# Trains the objects model from nothing, in one command (docs/OBJECTS.md): writes the objects
# data set (150 words: train 20,000, val 500, test 1,000 and test-style 1,000 images), runs
# every stage of the recipe with the `objects` preset, scores the test split (the reference's
# captions) and the test and test-style splits (lightcap's captions) and copies the model
# directory to models/objects. Resumes where it stopped if run again.
#   scripts/train_objects.sh                 (extra arguments go to `lightcap_train.recipe.train all`)
#   RUN=runs/other DATA=data/objects scripts/train_objects.sh --set seed=1
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-data/objects}
RUN=${RUN:-runs/objects}
WORDS=${WORDS:-150}
export PYTHONPATH="$PWD/python${PYTHONPATH:+:$PYTHONPATH}"
py=.venv/bin/python
start=$(date +%s)
split() {  # split seed count
  if [ ! -f "$DATA/$1/captions.json" ]; then
    $py -m lightcap_train.data.objects --split "$1" --seed "$2" --count "$3" --out "$DATA/$1" --words "$WORDS" --workers 2
  fi
}
split val 2 500
split test 3 1000
split test-style 4 1000
split train 1 20000
echo "train_objects: data ready after $(( ($(date +%s) - start) / 60 )) min"
$py -m lightcap_train.recipe.train all --run "$RUN" --recipe objects \
  --annotations "$DATA/train/captions.json" --images "$DATA/train/images" \
  --instances "$DATA/train/instances.json" --concepts "$DATA/train/concepts.txt" \
  --val-annotations "$DATA/val/captions.json" --val-images "$DATA/val/images" \
  --test-annotations "$DATA/test/captions.json" --test-images "$DATA/test/images" "$@"
echo "train_objects: trained in $(( ($(date +%s) - start) / 60 )) min (log: $RUN/train.log)"
$py -m lightcap_train.data.objects.score --data "$DATA/test" --results "$RUN/eval/results.json" \
  --json "$RUN/eval/test-reference.json"
for s in test test-style; do
  scripts/lightcap eval --model "$RUN/model" --annotations "$DATA/$s/captions.json" --images "$DATA/$s/images" \
    --save-results "$RUN/eval/$s-lightcap-results.json" --no-meteor > /dev/null
  $py -m lightcap_train.data.objects.score --data "$DATA/$s" --results "$RUN/eval/$s-lightcap-results.json" \
    --json "$RUN/eval/$s-lightcap.json"
done
rm -rf models/objects
mkdir -p models
cp -r "$RUN/model" models/objects
echo "train_objects: models/objects written in $(( ($(date +%s) - start) / 60 )) min"
