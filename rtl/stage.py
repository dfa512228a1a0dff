"""The shape every spec-driven stage of the core shares: built from a FixedPointSpec, one ``lib.stream``
input ``i`` and one output ``o``."""

from __future__ import annotations

from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from poise.golden.fixed import FixedPointSpec


class FixedPointStage(wiring.Component):
    """A component whose every number comes from ``fixed``, with request stream ``i`` and result stream ``o``
    whose payloads a subclass defines in :meth:`layouts`.

    Raises ``TypeError`` if ``fixed`` is not a :class:`FixedPointSpec`, and ``ValueError`` if a schedule ROM
    holds a negative word (the ROM ports carry no sign bit).
    """

    @staticmethod
    def layouts(fixed: FixedPointSpec) -> tuple[data.Layout, data.Layout]:
        """The payload layouts of the request and the result streams."""
        raise NotImplementedError

    def __init__(self, fixed: FixedPointSpec) -> None:
        if not isinstance(fixed, FixedPointSpec):
            raise TypeError(f"fixed must be a FixedPointSpec, not {fixed!r}")
        for name in ("epsilon_rom", "lambda_rom", "inv_lambda_rom"):
            rom = getattr(fixed, name)
            if rom is not None and min(rom) < 0:
                raise ValueError(f"{name} holds negative words; the neuron's ROM ports are unsigned")
        self._fixed = fixed
        request, result = self.layouts(fixed)
        super().__init__({"i": In(stream.Signature(request)), "o": Out(stream.Signature(result))})

    @property
    def fixed(self) -> FixedPointSpec:
        """The fixed-point spec this stage implements."""
        return self._fixed
