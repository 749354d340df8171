#!/usr/bin/env bash
# The optional engine tests (not part of scripts/test.sh or CI): installs pyspark, ray[data] and
# pyarrow (python/requirements-engines.txt) into .venv, builds lightcap if needed, then runs
# python/tests/test_engines.py: Spark (local[2], RDD.pipe) and Ray Data (a local cluster,
# map_batches) each caption 200 scenes through `lightcap caption --stream` into Parquet and
# compare with `lightcap caption --format jsonl`. Needs Java 17+ for Spark. docs/SCALE.md.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --python
echo "== pip install -r python/requirements-engines.txt"
.venv/bin/pip install -q -r python/requirements-engines.txt
scripts/lightcap --help >/dev/null  # builds .build/release/lightcap when a source is newer
echo "== pytest python/tests/test_engines.py"
export PYTHONPATH="$PWD/python${PYTHONPATH:+:$PYTHONPATH}"
LIGHTCAP_REQUIRE_SWIFT=1 LIGHTCAP_REQUIRE_ENGINES=1 .venv/bin/python -m pytest -q -rs python/tests/test_engines.py "$@"
