"""Model bundles: exact round trips, the documented format, and a clear PoiseError for every kind of damage."""

import hashlib
import json
import os
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest

from poise.errors import PoiseError
from poise.golden.bundle import Bundle, atomic_write, load_bundle, save_bundle
from poise.golden.model import build_model
from poise.golden.spec import Schedule, SpikingOptions, default_spec

CONTINUOUS = default_spec("continuous", (784, 16, 10))
# Every spiking option away from its default, so a field that does not survive the trip shows up.
SPIKING = default_spec("spiking", (20, 8, 4)).replace(
    steps_free=7,
    steps_nudge=3,
    epsilon=Schedule("osa", osa_target=0.05),
    beta=0.25,
    random_beta_sign=False,
    learning_rates=(0.3, 0.125),
    batch_size=5,
    seed=3,
    spiking=SpikingOptions(
        encoder="stochastic", predictive=Schedule("power", 0.9, 0.5), input_mode="current",
        continue_time=False, rule="spike_triggered",
    ),
)
INFO = {
    "dataset": "mnist",
    "train_images": 600,
    "test_images": 200,
    "history": [{"epoch": 1, "test_error": 0.1 + 0.2, "seconds": 1e-300}, {"epoch": 2, "test_error": 1 / 3}],
    "note": "ε, λ and ü survive",
}
ZIP_MAGIC = b"PK\x03\x04"


# --- helpers: an independent reading and writing of the documented format --------------------------


def documented_checksum(meta: dict, arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 of the sorted-key JSON of format/version/spec/info, then name|dtype|shape and bytes per array."""
    header = {key: meta[key] for key in ("format", "version", "spec", "info")}
    digest = hashlib.sha256(json.dumps(header, sort_keys=True).encode())
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}|{array.dtype.str}|{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def read_raw(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    """The arrays and the decoded ``__meta__`` of a bundle file, without any checks."""
    with np.load(path, allow_pickle=False) as archive:
        members = {name: archive[name] for name in archive.files}
    return members, json.loads(members.pop("__meta__").tobytes())


def write_raw(path: Path, arrays: dict[str, np.ndarray], meta: dict, *, reseal: bool) -> None:
    """Write a bundle file by hand; ``reseal`` stores a checksum that is valid for exactly these contents."""
    if reseal:
        meta = {**meta, "checksum": documented_checksum(meta, arrays)}
    payload = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), np.uint8)
    np.savez(path, **arrays, __meta__=payload)


@pytest.fixture
def saved(tmp_path) -> tuple[Path, dict[str, np.ndarray], dict]:
    """A freshly saved 784-16-10 continuous bundle: its path, raw arrays and raw metadata."""
    path = tmp_path / "model.npz"
    save_bundle(path, Bundle(CONTINUOUS, build_model(CONTINUOUS).params, INFO))
    arrays, meta = read_raw(path)
    return path, arrays, meta


def load_error(path: Path) -> str:
    with pytest.raises(PoiseError) as caught:
        load_bundle(path)
    message = str(caught.value)
    assert str(path) in message, message
    return message


# --- round trip ------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", [CONTINUOUS, SPIKING], ids=["continuous-784-16-10", "spiking-20-8-4"])
def test_round_trip_is_exact(tmp_path, spec):
    params = build_model(spec).params
    original = {name: array.copy() for name, array in params.items()}
    assert any(np.any(array != 0) for array in original.values())  # so equality below means something
    path = tmp_path / "model.npz"

    checksum = save_bundle(path, Bundle(spec, params, INFO))
    loaded = load_bundle(path)

    assert loaded.spec == spec
    assert loaded.spec.to_json() == spec.to_json()
    assert loaded.info == INFO
    assert sorted(loaded.params) == sorted(original)
    for name, array in original.items():
        assert loaded.params[name].dtype == array.dtype, name
        assert loaded.params[name].shape == array.shape, name
        assert loaded.params[name].tobytes() == array.tobytes(), name
    assert re.fullmatch(r"[0-9a-f]{64}", checksum)
    _, meta = read_raw(path)
    assert meta["format"] == "poise-bundle"
    assert meta["version"] == 1
    assert meta["checksum"] == checksum == documented_checksum(meta, original)


def test_loaded_bundle_computes_like_the_original(tmp_path):
    model = build_model(CONTINUOUS)
    path = tmp_path / "model.npz"
    save_bundle(path, Bundle(CONTINUOUS, model.params))
    loaded = load_bundle(path)
    x = np.random.default_rng(1).random((4, 784), dtype=np.float32)
    again = build_model(loaded.spec, loaded.params).infer(x)
    assert np.array_equal(again.outputs, model.infer(x).outputs)
    assert loaded.info == {}


def test_file_is_an_uncompressed_npz_without_pickles(saved):
    path, arrays, _ = saved
    assert path.read_bytes()[:4] == ZIP_MAGIC
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
    assert sorted(info.filename for info in infos) == sorted([*(f"{n}.npy" for n in arrays), "__meta__.npy"])
    assert all(info.compress_type == zipfile.ZIP_STORED for info in infos)
    assert all(array.dtype != object for array in arrays.values())


def test_save_creates_missing_directories(tmp_path):
    path = tmp_path / "a" / "b" / "model.npz"
    save_bundle(path, Bundle(CONTINUOUS, build_model(CONTINUOUS).params))
    assert load_bundle(path).spec == CONTINUOUS


def test_bundle_from_before_a_spec_field_was_added_still_loads(saved):
    """A stored spec without a field that has a default (written by an older poise) verifies and loads."""
    path, arrays, meta = saved
    del meta["spec"]["learning_rate_decay"]
    del meta["checksum"]
    write_raw(path, arrays, meta, reseal=True)
    assert load_bundle(path).spec == CONTINUOUS
    meta["spec"]["batch_size"] = 7  # the stored spec is what the checksum covers
    write_raw(path, arrays, {**meta, "checksum": read_raw(path)[1]["checksum"]}, reseal=False)
    assert "checksum mismatch" in load_error(path)


# --- damage ----------------------------------------------------------------------------------------


def test_changed_weight_fails_the_checksum(saved):
    path, arrays, meta = saved
    w0 = arrays["w0"].copy()
    w0.view(np.uint32)[3, 5] ^= 1  # one flipped bit in one weight
    write_raw(path, {**arrays, "w0": w0}, meta, reseal=False)
    assert "checksum mismatch" in load_error(path)


def test_changed_info_fails_the_checksum(saved):
    path, arrays, meta = saved
    meta["info"]["history"][0]["test_error"] = 0.01
    write_raw(path, arrays, meta, reseal=False)
    assert "checksum mismatch" in load_error(path)


def test_flipped_byte_in_the_file_is_caught(saved):
    path, arrays, _ = saved
    raw = bytearray(path.read_bytes())
    offset = bytes(raw).index(arrays["w0"][100].tobytes())  # w0's row 100, inside the stored array data
    raw[offset + 9] ^= 0x10
    path.write_bytes(bytes(raw))
    message = load_error(path)
    assert "damaged" in message or "checksum mismatch" in message


def test_resealed_file_loads(saved):
    # The crafting helpers below are only meaningful if an honestly resealed file is accepted.
    path, arrays, meta = saved
    w0 = arrays["w0"].copy()
    w0[0, 0] += 1
    write_raw(path, {**arrays, "w0": w0}, meta, reseal=True)
    assert load_bundle(path).params["w0"][0, 0] == w0[0, 0]


def test_unknown_version(saved):
    path, arrays, meta = saved
    write_raw(path, arrays, {**meta, "version": 99}, reseal=True)
    message = load_error(path)
    assert "version 99" in message
    assert "not supported" in message


def test_unknown_format(saved):
    path, arrays, meta = saved
    write_raw(path, arrays, {**meta, "format": "other-tool"}, reseal=True)
    assert "not a poise bundle" in load_error(path)


def test_transposed_weights_do_not_match_the_spec(saved):
    path, arrays, meta = saved
    write_raw(path, {**arrays, "w0": np.ascontiguousarray(arrays["w0"].T)}, meta, reseal=True)
    message = load_error(path)
    assert "w0" in message
    assert "(16, 784)" in message  # what the file has
    assert "(784, 16)" in message  # what 784-16-10 needs


@pytest.mark.parametrize("reseal", [True, False], ids=["resealed", "stale-checksum"])
def test_missing_array(saved, reseal):
    path, arrays, meta = saved
    del arrays["b1"]
    write_raw(path, arrays, meta, reseal=reseal)
    message = load_error(path)
    if reseal:
        assert "b1" in message
        assert "do not match" in message


def test_extra_array(saved):
    path, arrays, meta = saved
    write_raw(path, {**arrays, "w9": np.zeros((2, 2), np.float32)}, meta, reseal=True)
    assert "w9" in load_error(path)


def test_missing_metadata(saved):
    path, arrays, _ = saved
    np.savez(path, **arrays)
    assert "__meta__" in load_error(path)


@pytest.mark.parametrize("payload", [b"\xff\xfe\x00", b"{not json", b"[1, 2, 3]"], ids=["not-utf8", "not-json", "list"])
def test_corrupt_metadata(saved, payload):
    path, arrays, _ = saved
    np.savez(path, **arrays, __meta__=np.frombuffer(payload, np.uint8))
    assert "metadata is corrupt" in load_error(path)


def test_metadata_without_spec(saved):
    path, arrays, meta = saved
    del meta["spec"]
    np.savez(path, **arrays, __meta__=np.frombuffer(json.dumps(meta).encode(), np.uint8))
    assert "spec" in load_error(path)


def test_malformed_spec(saved):
    path, arrays, meta = saved
    meta["spec"]["learning_rates"] = [0.1]  # two weight layers, one rate
    write_raw(path, arrays, meta, reseal=True)
    message = load_error(path)
    assert "spec" in message
    assert "learning rate" in message


@pytest.mark.parametrize("cut", [lambda n: n // 2, lambda n: n - 10, lambda n: 4], ids=["half", "tail", "header"])
def test_truncated_file(saved, cut):
    path, _, _ = saved
    raw = path.read_bytes()
    path.write_bytes(raw[: cut(len(raw))])
    assert "truncated" in load_error(path)


@pytest.mark.parametrize(
    "content",
    [b"", b"just some text\n", b"\x89PNG\r\n\x1a\n" + bytes(64)],
    ids=["empty", "text", "png"],
)
def test_not_a_zip_at_all(tmp_path, content):
    path = tmp_path / "model.npz"
    path.write_bytes(content)
    message = load_error(path)
    assert "not a poise bundle" in message
    assert "zip" in message


def test_plain_npy_file_is_not_a_bundle(tmp_path):
    path = tmp_path / "model.npz"
    with path.open("wb") as handle:
        np.save(handle, np.zeros((3, 3), np.float32))
    assert "not a poise bundle" in load_error(path)


def test_missing_file(tmp_path):
    assert "no such bundle file" in load_error(tmp_path / "nothing.npz")


def test_directory_is_not_a_bundle(tmp_path):
    assert "no such bundle file" in load_error(tmp_path)


# --- the atomic writer -----------------------------------------------------------------------------


def test_atomic_write_replaces_and_leaves_no_temporary_files(tmp_path):
    path = tmp_path / "file.bin"
    atomic_write(path, lambda handle: handle.write(b"first"))
    atomic_write(path, lambda handle: handle.write(b"second"))
    assert path.read_bytes() == b"second"
    assert [p.name for p in tmp_path.iterdir()] == ["file.bin"]


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path, error):
    path = tmp_path / "file.bin"
    path.write_bytes(b"old contents")

    def write(handle):
        handle.write(b"half of the new")
        raise error("disk on fire")

    with pytest.raises(error, match="disk on fire"):
        atomic_write(path, write)
    assert path.read_bytes() == b"old contents"
    assert [p.name for p in tmp_path.iterdir()] == ["file.bin"]


def test_failed_bundle_save_keeps_the_old_bundle(tmp_path, monkeypatch):
    path = tmp_path / "model.npz"
    params = build_model(CONTINUOUS).params
    save_bundle(path, Bundle(CONTINUOUS, params))
    before = path.read_bytes()

    def disk_full(handle, **arrays):
        handle.write(ZIP_MAGIC + b" the first few bytes")
        raise OSError("No space left on device")

    monkeypatch.setattr(np, "savez", disk_full)
    with pytest.raises(OSError, match="No space left"):
        save_bundle(path, Bundle(CONTINUOUS, {name: array + 1 for name, array in params.items()}))
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.npz"]
    assert load_bundle(path).params["w0"].tobytes() == params["w0"].tobytes()


@pytest.mark.parametrize(
    ("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)], ids=["022", "077", "002"]
)
def test_written_files_follow_the_umask(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        save_bundle(tmp_path / "model.npz", Bundle(CONTINUOUS, build_model(CONTINUOUS).params))
        atomic_write(tmp_path / "file.bin", lambda handle: handle.write(b"x"))
    finally:
        os.umask(previous)
    assert (tmp_path / "model.npz").stat().st_mode & 0o777 == mode
    assert (tmp_path / "file.bin").stat().st_mode & 0o777 == mode
