"""The engine examples (examples/engines/) run for real on a local engine: Spark (local[2],
RDD.pipe; paths, and the files' bytes read by Spark as image_base64 records) and Ray Data (a
local cluster, map_batches on actors) each caption 200 rendered scenes through
`lightcap caption --stream` and write Parquet, which must hold the captions that
`lightcap caption --format jsonl` gives for the same files.

pyspark, ray and pyarrow are not in requirements.txt (they would lengthen every CI run):
scripts/test_engines.sh installs python/requirements-engines.txt and runs this file; without
them these tests are skipped."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "default"
EXAMPLES = ROOT / "examples" / "engines"
INSTALL = "scripts/test_engines.sh installs python/requirements-engines.txt and runs these tests"


def needs(*modules):
    """Skips a test (before its fixtures caption anything) unless `modules` are installed;
    fails it instead under scripts/test_engines.sh (LIGHTCAP_REQUIRE_ENGINES)."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    return pytest.mark.skipif(bool(missing) and not os.environ.get("LIGHTCAP_REQUIRE_ENGINES"),
                              reason=f"{', '.join(missing)} not installed: {INSTALL}")


@pytest.fixture(scope="module")
def lightcap(lightcap_exe):
    return lightcap_exe


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    """200 test-split scenes (256 px PNGs)."""
    out = tmp_path_factory.mktemp("scenes")
    subprocess.run([sys.executable, "-m", "lightcap_train.data.scenes", "--split", "test", "--seed", "7",
                    "--count", "200", "--out", str(out)], check=True, cwd=ROOT,
                   env={**os.environ, "PYTHONPATH": str(ROOT / "python")}, capture_output=True)
    return out / "images"


@pytest.fixture(scope="module")
def expected(lightcap, scenes) -> dict:
    """`lightcap caption FOLDER --format jsonl` on the scenes, by path, one at a time as --stream
    captions (in batches the scores may differ in the last bits)."""
    out = subprocess.run([str(lightcap), "caption", str(scenes), "--format", "jsonl", "--batch", "1", "--model", str(MODEL)],
                         capture_output=True, text=True, check=True, timeout=600)
    records = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(records) == 200
    return {r["path"]: r for r in records}


def run_example(script, *args):
    out = subprocess.run([sys.executable, str(EXAMPLES / script), *map(str, args)],
                         capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    return out.stdout


def check_parquet(path: Path, expected: dict, by_uri=False):
    """The Parquet rows are the jsonl records: one per image, same caption, score, concepts.
    `by_uri`: the ids are file URIs (records of the images' bytes, which have no path)."""
    import pyarrow.parquet as pq
    rows = pq.read_table(path).to_pylist()
    image = (lambda r: urlparse(r["id"]).path) if by_uri else (lambda r: r["id"])
    assert sorted(map(image, rows)) == sorted(expected)
    for r in rows:
        want = expected[image(r)]
        assert r["error"] is None, r
        assert r["path"] == (None if by_uri else want["path"])
        assert r["caption"] == want["caption"], r["id"]
        assert r["score"] == want["score"], r["id"]
        assert [(c["name"], c["score"]) for c in r["concepts"]] == [(c["name"], c["score"]) for c in want["concepts"]]
        assert set(dict(r["timings"])) == set(want["timings"])


@needs("pyspark", "pyarrow")
@pytest.mark.parametrize("source", ["--images", "--binary"])
def test_spark_pipes_images_through_lightcap(source, lightcap, scenes, expected, tmp_path):
    out = tmp_path / "captions.parquet"
    log = run_example("spark_caption.py", source, scenes, "--out", out, "--lightcap", lightcap,
                      "--model", MODEL, "--master", "local[2]", "--partitions", 4)
    assert "200 images (0 failed)" in log, log
    check_parquet(out, expected, by_uri=source == "--binary")


@needs("ray", "pyarrow")
def test_ray_data_map_batches_through_lightcap(lightcap, scenes, expected, tmp_path):
    out = tmp_path / "captions.parquet"
    log = run_example("ray_caption.py", "--images", scenes, "--out", out, "--lightcap", lightcap,
                      "--model", MODEL, "--actors", 2, "--batch-size", 32)
    assert "200 images (0 failed)" in log, log
    check_parquet(out, expected)
