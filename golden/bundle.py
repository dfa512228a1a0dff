"""Model bundles: one file that holds a network spec, its arrays and where they came from.

Format (version 1): an uncompressed ``.npz`` archive (no pickles) with
- one member per parameter array (``w0``, ``b0``, …);
- ``__meta__``: UTF-8 JSON ``{"format": "poise-bundle", "version": 1, "spec": {...}, "info": {...},
  "checksum": "<sha256>"}``, plus ``"fixed": {...}`` (a :class:`FixedPointSpec`) when the bundle has one.

The checksum is the SHA-256 of the JSON of ``format``, ``version``, ``spec``, ``info`` and, if present,
``fixed`` (sorted keys, as stored in the file) followed by, for every array in name order, its name, dtype,
shape and raw bytes. Loading verifies the format, the version, the checksum and that every array has the
shape the spec needs.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from poise.errors import PoiseError
from poise.golden.fixed import FixedPointSpec
from poise.golden.spec import NetworkSpec

FORMAT = "poise-bundle"
VERSION = 1
META = "__meta__"


@dataclass
class Bundle:
    """A network spec, its parameter arrays, free-form provenance (``info``: training history…) and optionally
    the fixed-point spec the integer model and the RTL run it with."""

    spec: NetworkSpec
    params: dict[str, np.ndarray]
    info: dict[str, Any] = field(default_factory=dict)
    fixed: FixedPointSpec | None = None

    def header(self) -> dict[str, Any]:
        """The JSON metadata without the checksum (``fixed`` only when present, so older bundles verify)."""
        header = {"format": FORMAT, "version": VERSION, "spec": self.spec.to_dict(), "info": self.info}
        if self.fixed is not None:
            header["fixed"] = self.fixed.to_dict()
        return header

    def checksum(self) -> str:
        return checksum(self.header(), self.params)


def checksum(header: dict[str, Any], params: dict[str, np.ndarray]) -> str:
    """SHA-256 of the metadata JSON (sorted keys) and of every array's name, dtype, shape and bytes."""
    digest = hashlib.sha256()
    digest.update(json.dumps(header, sort_keys=True).encode())
    for name in sorted(params):
        array = np.ascontiguousarray(params[name])
        digest.update(f"{name}|{array.dtype.str}|{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def spec_sha256(spec: NetworkSpec, fixed: FixedPointSpec) -> str:
    """SHA-256 (hex) of the canonical JSON ``{"spec": ..., "fixed": ...}`` (sorted keys, no spaces): what a
    device's INFO and a Verilog manifest identify their network by."""
    canonical = json.dumps({"spec": spec.to_dict(), "fixed": fixed.to_dict()}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def atomic_write(path: Path, write: Any) -> None:
    """Call ``write(file_object)`` on a temporary file beside ``path``, then rename it into place.

    A crash leaves either the old file or the new one, never a torn one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            Path(temporary).chmod(0o666 & ~_umask())  # mkstemp makes it private; give it a normal file's mode
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        Path(temporary).replace(path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _umask() -> int:
    """The process's file-creation mask (reading it means setting it, so set it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def save_bundle(path: Path, bundle: Bundle) -> str:
    """Write ``bundle`` to ``path`` atomically; returns its checksum."""
    checksum = bundle.checksum()
    meta = {**bundle.header(), "checksum": checksum}
    arrays = {name: np.ascontiguousarray(array) for name, array in bundle.params.items()}
    arrays[META] = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8)
    atomic_write(Path(path), lambda handle: np.savez(handle, **arrays))
    return checksum


def load_bundle(path: Path) -> Bundle:
    """Read and verify a bundle; any problem is a :class:`PoiseError` naming the file and the fault."""
    path = Path(path)
    if not path.is_file():
        raise PoiseError(f"{path}: no such bundle file")
    with path.open("rb") as handle:
        if handle.read(4) != b"PK\x03\x04":
            raise PoiseError(f"{path}: not a poise bundle (the file is not an .npz/zip archive)")
    try:
        # np.load leaks the file it opened when the zip is unreadable, so open (and close) it here.
        with path.open("rb") as handle, np.load(handle, allow_pickle=False) as archive:
            members = {name: archive[name] for name in archive.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as error:
        raise PoiseError(f"{path}: not a readable poise bundle ({error}); is the file damaged or truncated?") from None
    if META not in members:
        raise PoiseError(f"{path}: not a poise bundle (no {META} member)")
    try:
        meta = json.loads(members.pop(META).tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise PoiseError(f"{path}: the bundle's metadata is corrupt") from None
    if not isinstance(meta, dict):
        raise PoiseError(f"{path}: the bundle's metadata is corrupt (not a JSON object)")
    if meta.get("format") != FORMAT:
        raise PoiseError(f"{path}: not a poise bundle (format {meta.get('format')!r})")
    if meta.get("version") != VERSION:
        raise PoiseError(
            f"{path}: bundle format version {meta.get('version')!r} is not supported by this poise "
            f"(it reads version {VERSION}); re-export the model with a matching poise"
        )
    try:
        spec = NetworkSpec.from_dict(meta["spec"])
    except (PoiseError, KeyError, TypeError, ValueError) as error:
        raise PoiseError(f"{path}: the bundle's network spec is unreadable ({error})") from None
    fixed = None
    if meta.get("fixed") is not None:
        try:
            fixed = FixedPointSpec.from_dict(meta["fixed"])
        except (PoiseError, KeyError, TypeError, ValueError) as error:
            raise PoiseError(f"{path}: the bundle's fixed-point spec is unreadable ({error})") from None
    bundle = Bundle(spec, members, meta.get("info", {}), fixed)
    # Verified against the metadata as stored, so a bundle written before a spec field with a default was
    # added still verifies.
    if checksum({k: v for k, v in meta.items() if k != "checksum"}, members) != meta.get("checksum"):
        raise PoiseError(f"{path}: checksum mismatch: the bundle was modified or damaged after it was written")
    from poise.golden.model import build_model

    try:
        build_model(bundle.spec, bundle.params)  # verifies names and shapes against the spec
    except PoiseError as error:
        raise PoiseError(f"{path}: {error}") from None
    return bundle
