#!/usr/bin/env bash
# Runs every test: the Python reference's fixtures, the Swift build, the Python tests (pytest;
# some train models and check them with lightcap, one drives the service's page in headless
# Chromium), the Swift tests against the fixtures, the default model's captions by both engines,
# then a short load test of the service and a short fuzzing of every parser (scripts/fuzz.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --python
export PYTHONPATH="$PWD/python${PYTHONPATH:+:$PYTHONPATH}"

echo "== fixtures (python -m lightcap_train.tools.fixtures)"
.venv/bin/python -m lightcap_train.tools.fixtures --out .fixtures
.venv/bin/python -m lightcap_train.tools.tokenizer_cases --out .fixtures/tokenizer
.venv/bin/python -m lightcap_train.tools.image_fixtures --out .fixtures/images
.venv/bin/python -m lightcap_train.tools.metric_cases --out .fixtures/metrics

echo "== swift build (the engine, lightcap and the Swift tests; pytest runs lightcap on models the recipe trains)"
swift build -c release -Xswiftc -enable-testing --build-tests 2>&1

echo "== pytest"
export LIGHTCAP_FIXTURES="$PWD/.fixtures"
LIGHTCAP_REQUIRE_SWIFT=1 .venv/bin/python -m pytest -q --durations=12 python/tests

echo "== swift test"
swift test -c release -Xswiftc -enable-testing --skip-build 2>&1

echo "== again on oneDNN's AVX2 kernels (DNNL_MAX_CPU_ISA=AVX2): INT8 decoder exactness, INT8 convolutions and trunk (7-bit weights), Winograd fallback, LightCap's Winograd, direct and pool kernels"
DNNL_MAX_CPU_ISA=AVX2 swift test -c release -Xswiftc -enable-testing --skip-build \
    --filter 'QuantizedDecoderTests|QuantizedConvolutionTests|TrunkQuantizerTests|ConvolutionTests.testWinogradLayersMatchReference|WinogradConvolutionTests|DirectConvolutionTests|AveragePoolTests' 2>&1

echo "== the INT8 linear layer on its AVX2 path (LIGHTCAP_KERNEL_ISA=avx2; the AVX-512 one ran above where the host has it)"
LIGHTCAP_KERNEL_ISA=avx2 swift test -c release -Xswiftc -enable-testing --skip-build --filter 'Int8LinearTests' 2>&1

echo "== LightCap's Winograd, direct, pool, INT8 linear and attention kernels on their generic (non-AVX2) vector path (LIGHTCAP_KERNEL_ISA=generic)"
LIGHTCAP_KERNEL_ISA=generic swift test -c release -Xswiftc -enable-testing --skip-build \
    --filter 'WinogradConvolutionTests|DirectConvolutionTests|AveragePoolTests|Int8LinearTests|DenseKernelTests.testAttention' 2>&1

echo "== the Swift engine's captions equal the Python reference's (models/default, 100 test scenes)"
.venv/bin/python -m lightcap_train.data.scenes --split test --seed 2026 --count 100 --out .fixtures/scenes-test
.venv/bin/python scripts/compare_engines.py --data .fixtures/scenes-test --model models/default \
    --lightcap .build/release/lightcap > .fixtures/engine-parity.md || { cat .fixtures/engine-parity.md; exit 1; }
head -5 .fixtures/engine-parity.md | tail -1

echo "== the service under load (scripts/load_test.sh 10 16 30: 10 s of 16 clients after 30 s of warm-up; docs/SERVER.md has the 10-minute soak)"
scripts/load_test.sh 10 16 30

echo "== fuzz smoke (scripts/fuzz.sh 10: every parser that reads outside data, 10 s each under libFuzzer + ASan; docs/FUZZING.md)"
scripts/fuzz.sh 10
