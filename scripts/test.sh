#!/usr/bin/env bash
# Runs every test: Python reference tests (pytest), then the Swift tests against fixtures
# written by the Python reference.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --python
export PYTHONPATH="$PWD/python${PYTHONPATH:+:$PYTHONPATH}"

echo "== fixtures (python -m lightcap_train.fixtures)"
.venv/bin/python -m lightcap_train.fixtures --out .fixtures
.venv/bin/python -m lightcap_train.tokenizer_cases --out .fixtures/tokenizer
.venv/bin/python -m lightcap_train.image_fixtures --out .fixtures/images

echo "== pytest"
LIGHTCAP_FIXTURES="$PWD/.fixtures" .venv/bin/python -m pytest -q python/tests

echo "== swift test"
export LIGHTCAP_FIXTURES="$PWD/.fixtures"
swift test -c release -Xswiftc -enable-testing 2>&1
