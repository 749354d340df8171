"""Grid-feature shards (lightcap_train.data.features): the image sources equal the shared
preprocessing, what GridShards reads back is exactly what the encoder gave (fp16), and an
interrupted extraction resumes with only the missing shards and the same bytes."""

import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from lightcap_train.data import features as FT
from lightcap_train.data.batches import normalize
from lightcap_train.reference.preprocess import CLIP_MEAN, CLIP_STD, clip_preprocess, load_image

SIZE = 32  # model input side of the fake encoder
POOL = 8  # -> 4 x 4 = 16 tokens
CHANNELS = 6
MEAN, STD = list(CLIP_MEAN), list(CLIP_STD)  # lists of floats, as LightCapConfig holds them


class Interrupted(Exception):
    pass


class FakeEncoder:
    """[b, 3, S, S] -> [b, 16, 6]: 8x8 average pooling then a fixed random 3 -> 6 map, scaled so
    that fp16 rounding matters. Each output depends on its own image only, so any batching gives
    the same values. Counts calls and images, and can fail on a chosen call."""

    def __init__(self, fail_on_call: int | None = None):
        self.weight = torch.randn(3, CHANNELS, generator=torch.Generator().manual_seed(3)) * 40
        self.calls = self.images = 0
        self.first_batch_sizes = []
        self.fail_on_call = fail_on_call

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        assert x.dtype == torch.float32 and x.is_contiguous(memory_format=torch.channels_last)
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise Interrupted(f"simulated interruption on call {self.calls}")
        self.images += len(x)
        tokens = F.avg_pool2d(x, POOL).flatten(2).transpose(1, 2)  # [b, N, 3]
        return (tokens[..., :, None] * self.weight).sum(-2) + 0.001  # [b, N, C]


def write_images(folder) -> list[str]:
    """Seven small files of odd sizes and modes (JPEG, PNG RGB / RGBA / gray / palette)."""
    rng = np.random.default_rng(0)
    paths = []
    specs = [("a.jpg", (37, 29), "RGB"), ("b.png", (29, 45), "RGB"), ("c.png", (33, 33), "RGBA"),
             ("d.png", (51, 40), "L"), ("e.jpg", (40, 63), "RGB"), ("f.png", (35, 47), "P"),
             ("g.png", (32, 32), "RGB")]
    for name, (w, h), mode in specs:
        bands = {"RGB": 3, "RGBA": 4, "L": 1, "P": 1}[mode]
        arr = rng.integers(0, 256, (h, w, bands), dtype=np.uint8)
        img = Image.fromarray(arr[..., 0] if bands == 1 else arr, "L" if mode == "P" else mode)
        if mode == "P":
            img = img.convert("P")
        path = os.path.join(folder, name)
        img.save(path, quality=90) if name.endswith(".jpg") else img.save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def image_paths(tmp_path_factory):
    return write_images(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def pixels():
    return np.random.default_rng(1).integers(0, 256, (11, SIZE, SIZE, 3), dtype=np.uint8)


def expected(dataset) -> torch.Tensor:
    """What the shards must hold: the encoder over the whole set at once, rounded to fp16."""
    x = torch.stack([dataset[i][1] for i in range(len(dataset))])
    return FakeEncoder()(x.contiguous(memory_format=torch.channels_last)).half()


def shard_bytes(folder) -> dict[str, bytes]:
    return {f: open(os.path.join(folder, f), "rb").read() for f in sorted(os.listdir(folder))}


def test_image_files_equal_clip_preprocess(image_paths):
    ds = FT.ImageFiles(image_paths, SIZE, MEAN, STD)
    assert len(ds) == len(image_paths)
    for i, path in enumerate(image_paths):
        j, x = ds[i]
        want = clip_preprocess(load_image(path), SIZE, MEAN, STD)
        assert j == i and x.dtype == torch.float32 and x.shape == (3, SIZE, SIZE)
        assert np.array_equal(x.numpy(), want)


def test_pixel_array_equals_normalize(pixels):
    ds = FT.PixelArray(pixels, MEAN, STD)
    x = torch.stack([ds[i][1] for i in range(len(ds))])
    want = normalize(pixels, MEAN, STD)
    assert x.dtype == want.dtype == torch.float32
    assert torch.equal(x, want)
    assert [ds[i][0] for i in range(len(ds))] == list(range(len(pixels)))
    with pytest.raises(ValueError, match="uint8"):
        FT.PixelArray(pixels.astype(np.float32))


def test_write_and_read_image_files(image_paths, tmp_path):
    ds = FT.ImageFiles(image_paths, SIZE, MEAN, STD)
    logs = []
    grid = FT.write_features(FakeEncoder(), ds, str(tmp_path), batch=2, shard_size=4, log=logs.append)
    manifest = json.load(open(tmp_path / "manifest.json"))
    assert manifest == {"count": 7, "tokens": 16, "channels": CHANNELS, "dtype": "float16", "shard_size": 4,
                        "shards": [{"file": "shard-00000.npy", "rows": 4}, {"file": "shard-00001.npy", "rows": 3}],
                        "complete": True}
    assert sorted(os.listdir(tmp_path)) == ["manifest.json", "shard-00000.npy", "shard-00001.npy"]
    assert np.load(tmp_path / "shard-00001.npy").dtype == np.float16
    assert any("7/7 images" in line for line in logs)

    want = expected(ds)
    assert len(grid) == 7 and grid.shape == (7, 16, CHANNELS) and (grid.tokens, grid.channels) == (16, CHANNELS)
    assert grid[:].dtype == torch.float16 and torch.equal(grid[:], want)
    assert torch.equal(grid[3], want[3]) and torch.equal(grid[-1], want[-1])  # int: [N, C]
    assert torch.equal(grid[np.int64(4)], want[4]) and torch.equal(grid[torch.tensor(5)], want[5])
    assert torch.equal(grid[2:6], want[2:6])  # across the shard border
    assert torch.equal(grid[5:1:-2], want[[5, 3]]) and torch.equal(grid[::3], want[::3])
    assert grid[5:5].shape == (0, 16, CHANNELS)
    assert torch.equal(grid[1:7].float(), want[1:7].float())


def test_gather_across_shards(pixels, tmp_path):
    ds = FT.PixelArray(pixels, MEAN, STD)
    grid = FT.write_features(FakeEncoder(), ds, str(tmp_path), batch=2, shard_size=4, log=None)
    assert [s["rows"] for s in json.load(open(tmp_path / "manifest.json"))["shards"]] == [4, 4, 3]
    want = expected(ds)
    rng = np.random.default_rng(5)
    idx = rng.integers(0, len(ds), 25)  # any order, repeats, every shard
    idx[:4] = [10, 3, 3, 4]
    assert torch.equal(grid[idx], want[torch.from_numpy(idx)])
    assert torch.equal(grid[idx.tolist()], want[torch.from_numpy(idx)])
    assert torch.equal(grid[torch.from_numpy(idx)], want[torch.from_numpy(idx)])
    assert torch.equal(grid[[-1, 0, -11]], want[[10, 0, 0]])
    assert grid[np.array([], np.int64)].shape == (0, 16, CHANNELS)
    with pytest.raises(IndexError, match="11"):
        grid[[0, 11]]
    with pytest.raises(IndexError):
        grid[-12]
    with pytest.raises(TypeError):
        grid[np.array([0.5])]


@pytest.mark.parametrize("keep_manifest", [True, False])
def test_resume_recomputes_only_missing_shards(pixels, tmp_path, keep_manifest):
    ds = FT.PixelArray(pixels, MEAN, STD)
    whole, part = tmp_path / "whole", tmp_path / "part"
    FT.write_features(FakeEncoder(), ds, str(whole), batch=2, shard_size=4, log=None)

    # Interrupted on the 4th batch: shard 0 (batches 1-2) is written, shard 1 is not.
    with pytest.raises(Interrupted):
        FT.write_features(FakeEncoder(fail_on_call=4), ds, str(part), batch=2, shard_size=4, log=None)
    assert sorted(os.listdir(part)) == ["manifest.json", "shard-00000.npy"]
    manifest = json.load(open(part / "manifest.json"))
    assert manifest["complete"] is False and [s["file"] for s in manifest["shards"]] == ["shard-00000.npy"]
    with pytest.raises(ValueError, match="incomplete"):
        FT.GridShards(str(part))
    if not keep_manifest:  # a crash between a shard's rename and the manifest's: the file is enough
        os.remove(part / "manifest.json")

    enc, logs = FakeEncoder(), []
    grid = FT.write_features(enc, ds, str(part), batch=2, shard_size=4, log=logs.append)
    assert (enc.calls, enc.images) == (4, 7)  # shards 1 and 2 only: batches of 2, 2, 2, 1
    assert any("resuming at image 4/11" in line for line in logs)
    assert shard_bytes(part) == shard_bytes(whole)
    assert torch.equal(grid[:], expected(ds))

    # Complete: a rerun returns at once.
    enc = FakeEncoder()
    FT.write_features(enc, ds, str(part), batch=2, shard_size=4, log=None)
    assert enc.calls == 0


def test_other_count_starts_over(pixels, tmp_path):
    FT.write_features(FakeEncoder(), FT.PixelArray(pixels, MEAN, STD), str(tmp_path), batch=2, shard_size=4,
                      log=None)
    enc = FakeEncoder()
    grid = FT.write_features(enc, FT.PixelArray(pixels[:5], MEAN, STD), str(tmp_path), batch=2, shard_size=4,
                             log=None)
    assert enc.images == 5 and len(grid) == 5
    assert sorted(os.listdir(tmp_path)) == ["manifest.json", "shard-00000.npy", "shard-00001.npy"]
    assert torch.equal(grid[:], expected(FT.PixelArray(pixels[:5], MEAN, STD)))


def test_workers_give_the_same_bytes(image_paths, tmp_path):
    ds = FT.ImageFiles(image_paths, SIZE, MEAN, STD)
    FT.write_features(FakeEncoder(), ds, str(tmp_path / "w0"), batch=2, shard_size=4, workers=0, log=None)
    FT.write_features(FakeEncoder(), ds, str(tmp_path / "w2"), batch=2, shard_size=4, workers=2, log=None)
    assert shard_bytes(tmp_path / "w0") == shard_bytes(tmp_path / "w2")


def test_corrupt_image_names_its_path(image_paths, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    ds = FT.ImageFiles(image_paths[:2] + [str(bad)], SIZE, MEAN, STD)
    with pytest.raises(FT.ImageError, match="broken.jpg") as err:
        ds[2]
    assert isinstance(err.value, ValueError) and str(err.value).startswith(str(bad))
    with pytest.raises(FT.ImageError, match="broken.jpg"):
        FT.write_features(FakeEncoder(), ds, str(tmp_path / "out"), batch=2, shard_size=2, log=None)
    assert sorted(os.listdir(tmp_path / "out")) == ["manifest.json", "shard-00000.npy"]


def test_clear_errors(pixels, tmp_path):
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        FT.GridShards(str(tmp_path))
    ds = FT.PixelArray(pixels, MEAN, STD)
    with pytest.raises(ValueError, match="multiple of batch"):
        FT.write_features(FakeEncoder(), ds, str(tmp_path / "x"), batch=4, shard_size=6)
    with pytest.raises(ValueError, match=r"\[b, N, C\]"):
        FT.write_features(lambda x: x.flatten(1), ds, str(tmp_path / "y"), batch=2, shard_size=4, log=None)
    with pytest.raises(ValueError, match="non-finite"):
        FT.write_features(lambda x: FakeEncoder()(x) * 1e4, ds, str(tmp_path / "z"), batch=2, shard_size=4,
                          log=None)


def test_lightcap_encode_image(tmp_path):
    """The real tiny image tower through the shards equals the recipe's in-memory path."""
    from lightcap_train.tools.fixtures import make_model

    model = make_model("tiny", seed=1)
    cfg = model.config
    px = np.random.default_rng(2).integers(0, 256, (5, cfg.image.size, cfg.image.size, 3), dtype=np.uint8)
    grid = FT.write_features(model.encode_image, FT.PixelArray(px, cfg.image.mean, cfg.image.std),
                             str(tmp_path), batch=5, shard_size=5, log=None)
    with torch.no_grad():
        want = model.encode_image(normalize(px, cfg.image.mean, cfg.image.std)).half()
    assert grid.shape == tuple(want.shape) and torch.equal(grid[:], want)
