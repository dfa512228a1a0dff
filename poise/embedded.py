"""The model bundles that ship inside the package (``poise/models``)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

ICEBREAKER_BUNDLE = "icebreaker-784-128-10.npz"
"""784-128-10, current input, 8-bit fixed point for the iCEBreaker: trained by poise (docs/FIXED_POINT.md)."""

ORANGECRAB_BUNDLE = "orangecrab-784-64-10.npz"
"""784-64-10, current input, 8-bit fixed point for the OrangeCrab's 56 block RAMs (docs/BOARDS.md): trained
by poise, 96.54 % on the MNIST test set in the integer model."""

ULX3S_BUNDLE = "ulx3s-784-500-10.npz"
"""The paper's 784-500-10, current input, 8-bit fixed point for the ULX3S's 208 block RAMs (docs/BOARDS.md):
trained by poise, 97.81 % on the MNIST test set in the integer model."""


def embedded_bundle(name: str = ICEBREAKER_BUNDLE) -> Path:
    """The path of a bundle shipped with poise."""
    return Path(str(resources.files("poise") / "models" / name))
