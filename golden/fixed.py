"""Fixed-point formats and the bit-exact integer references that the RTL is checked against.

Values are carried as *raw* integers: a raw ``r`` in a :class:`FixedFormat` stands for ``r / 2**frac``.
The functions here work on NumPy ``int64`` arrays of raw integers, vectorised over any shape, and each
states its rounding and saturation rule once; the RTL generator implements exactly that rule.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

from poise.errors import PoiseError
from poise.golden.spec import NetworkSpec, SpikingOptions

# Widest format whose sigma-delta intermediate (width + 2 bits, see sigma_delta_fixed) fits in int64.
MAX_WIDTH = 62


@dataclass(frozen=True)
class FixedFormat:
    """A signed two's-complement fixed-point format of ``width`` bits, ``frac`` of them after the point.

    A raw integer ``r`` in ``[min_raw, max_raw] = [-2**(width-1), 2**(width-1) - 1]`` stands for
    ``r / 2**frac``; the resolution is ``2**-frac``. ``FixedFormat(16, 12)`` is Q3.12 plus a sign bit.

    Raises
    ------
    ValueError
        If ``width`` is not in ``1..MAX_WIDTH`` or ``frac`` is not in ``0..width-1``.
    """

    width: int
    frac: int

    def __post_init__(self) -> None:
        if not (isinstance(self.width, int) and 1 <= self.width <= MAX_WIDTH):
            raise ValueError(f"width must be an int in 1..{MAX_WIDTH}, not {self.width!r}")
        if not (isinstance(self.frac, int) and 0 <= self.frac < self.width):
            raise ValueError(f"frac must be an int in 0..width-1 = 0..{self.width - 1}, not {self.frac!r}")

    @property
    def min_raw(self) -> int:
        """Most negative raw value, ``-2**(width-1)``."""
        return -(1 << (self.width - 1))

    @property
    def max_raw(self) -> int:
        """Most positive raw value, ``2**(width-1) - 1``."""
        return (1 << (self.width - 1)) - 1

    @property
    def one(self) -> int:
        """Raw value of 1.0 (``2**frac``; it need not lie inside the format's range)."""
        return 1 << self.frac

    def saturate(self, raw: np.ndarray) -> np.ndarray:
        """Clamp raw integers to ``[min_raw, max_raw]`` (saturation, never wrap-around)."""
        return np.clip(raw, self.min_raw, self.max_raw)

    def to_float(self, raw: np.ndarray) -> np.ndarray:
        """The real values ``raw / 2**frac`` as float64 (exact for ``width <= 53``)."""
        return np.asarray(raw, dtype=np.int64).astype(np.float64) / float(self.one)

    def contains(self, raw: np.ndarray) -> np.ndarray:
        """Elementwise: does ``raw`` lie in ``[min_raw, max_raw]``?"""
        raw = np.asarray(raw)
        return (raw >= self.min_raw) & (raw <= self.max_raw)


def sigma_delta_fixed(a: np.ndarray, phi: np.ndarray, fmt: FixedFormat) -> tuple[np.ndarray, np.ndarray]:
    """Sigma-delta encoder on raw fixed-point integers, [000] Eq. 11: q = [φ + a > ½], φ ← φ + a − q.

    ``a`` and ``phi`` are raw integers of ``fmt`` (broadcast against each other). The sum ``φ + a`` and the
    difference ``φ + a − q`` are formed exactly (no rounding: ½ and 1 are exact because ``fmt.frac >= 1``);
    the comparison is strict, so ``φ + a = ½`` gives ``q = 0``. The only inexact step is that the new φ
    **saturates** to ``[fmt.min_raw, fmt.max_raw]``: with q = 1 it can only overflow upwards, with q = 0 only
    downwards. Whenever no saturation happens the result equals the real-valued Eq. 11 exactly.

    Returns ``(q, phi_new)`` as int64 arrays: q in {0, 1}, phi_new raw in ``fmt``.

    Raises
    ------
    ValueError
        If ``fmt.frac < 1`` (½ would not be representable) or an input lies outside ``fmt``.
    """
    if fmt.frac < 1:
        raise ValueError(f"sigma-delta needs at least one fraction bit to represent 1/2, not {fmt}")
    a = np.asarray(a, dtype=np.int64)
    phi = np.asarray(phi, dtype=np.int64)
    for name, raw in (("a", a), ("phi", phi)):
        if not fmt.contains(raw).all():
            raise ValueError(f"{name} has raw values outside {fmt} ([{fmt.min_raw}, {fmt.max_raw}])")
    total = phi + a  # width + 1 bits: exact
    q = (total > (fmt.one >> 1)).astype(np.int64)
    phi_new = fmt.saturate(total - q * fmt.one)  # width + 2 bits before saturation
    return q, phi_new


# -- shared arithmetic rules ---------------------------------------------------------------------------------
ROUNDING_RULES: tuple[str, ...] = ("half_up", "floor")


def round_shift(raw: np.ndarray, shift: int, rounding: str = "half_up") -> np.ndarray:
    """Divide raw integers by ``2**shift`` with the stated rule, as the RTL does after a multiply.

    ``half_up``: add ``2**(shift-1)``, then arithmetic right shift (round to nearest, ties towards +∞);
    ``floor``: arithmetic right shift only. ``shift <= 0`` is an exact left shift by ``-shift``.
    """
    raw = np.asarray(raw, dtype=np.int64)
    if shift <= 0:
        return raw << -shift
    if rounding == "half_up":
        return (raw + (1 << (shift - 1))) >> shift
    if rounding == "floor":
        return raw >> shift
    raise ValueError(f"unknown rounding rule {rounding!r}; choose one of {', '.join(ROUNDING_RULES)}")


def quantise(values: np.ndarray, fmt: FixedFormat) -> np.ndarray:
    """Real values to raw integers of ``fmt``: round half up (``floor(x·2**frac + ½)``), then saturate."""
    scaled = np.floor(np.asarray(values, dtype=np.float64) * fmt.one + 0.5)
    return fmt.saturate(scaled).astype(np.int64)


def format_holding(magnitude_raw: int, frac: int) -> FixedFormat:
    """The narrowest signed format with ``frac`` fraction bits whose raw range holds ``±magnitude_raw``."""
    return FixedFormat(max(frac + 1, int(magnitude_raw).bit_length() + 1), frac)


# -- the fixed-point specification of the spiking network ----------------------------------------------------
LEARN_ROUNDING: tuple[str, ...] = ("stochastic", "nearest")
PIXEL = FixedFormat(9, 8)  # an MNIST byte p stands for x = p / 256 (raw = p; 255 → 0.996)


@dataclass(frozen=True)
class FixedPointSpec:
    """Every number of the integer arithmetic of [000] Eq. 14, read by the integer golden model and the RTL.

    Formats (raw integers, see :class:`FixedFormat`; every width includes a sign bit, which registers
    that only hold non-negative values may drop):

    - ``weight`` w (one format for every layer), ``bias`` b (fraction bits of ``weight``);
    - ``pixel`` x = pixel/256;
    - ``state`` s and ρ(sᵗ⁻¹) in [0, 1]; its ``frac`` F is shared by ``decoded`` v, ``pressure`` p and
      ``encoder`` (a and φ), so no alignment shifts occur between neuron registers;
    - ``accumulator`` u = Σ w·q, exact, in weight LSBs (wide enough for the column L1 norm of the weights);
    - ``increment``: a learning increment Δw, ``weight.frac`` plus guard fraction bits;
    - ``epsilon_format``, ``lambda_format``, ``inv_lambda_format``, ``beta_format``: the ROM words and 2|β|.

    ROMs: ``epsilon_rom[t − 1]``, ``lambda_rom[t − 1]``, ``inv_lambda_rom[t − 1]`` for t = 1..T, each the
    float schedule rounded once (half up); ``lambda_rom`` and ``inv_lambda_rom`` are None without predictive
    coding. ``two_beta`` is 2|β| in ``beta_format`` (the nudge 2β(y − s)).

    ``rounding`` applies to every multiply by a constant (λ, ε, 1/λ, 2β) and to the current-mode drive:
    ``half_up`` adds 2^(k−1) before the arithmetic right shift by k, ``floor`` only shifts (see
    :func:`round_shift`). Every register saturates to its format; s clips to [0, 1] ([000] Eq. 14).
    """

    weight: FixedFormat
    bias: FixedFormat
    pixel: FixedFormat
    state: FixedFormat
    accumulator: FixedFormat
    decoded: FixedFormat
    pressure: FixedFormat
    encoder: FixedFormat
    increment: FixedFormat
    epsilon_format: FixedFormat
    lambda_format: FixedFormat
    inv_lambda_format: FixedFormat
    beta_format: FixedFormat
    epsilon_rom: tuple[int, ...]
    lambda_rom: tuple[int, ...] | None
    inv_lambda_rom: tuple[int, ...] | None
    two_beta: int
    rounding: str = "half_up"
    eta_format: FixedFormat | None = None
    eta: tuple[int, ...] | None = None
    learn_rounding: str = "stochastic"

    def __post_init__(self) -> None:
        frac = self.state.frac
        problems = []
        if self.rounding not in ROUNDING_RULES:
            problems.append(f"rounding {self.rounding!r} is not one of {', '.join(ROUNDING_RULES)}")
        if any(fmt.frac != frac for fmt in (self.decoded, self.pressure, self.encoder)):
            problems.append("decoded, pressure and encoder must have the state's fraction bits")
        if not (self.bias.frac == self.accumulator.frac == self.weight.frac <= frac):
            problems.append("bias and accumulator need the weight's fraction bits, at most the state's")
        if self.pixel.frac > frac or self.encoder.frac < 1 or self.state.max_raw < self.state.one:
            problems.append("the state format must hold 1.0 and have at least the pixel's fraction bits")
        if (self.lambda_rom is None) != (self.inv_lambda_rom is None):
            problems.append("lambda_rom and inv_lambda_rom are both given or both None")
        for name, rom, fmt in (("epsilon", self.epsilon_rom, self.epsilon_format),
                               ("lambda", self.lambda_rom, self.lambda_format),
                               ("inv_lambda", self.inv_lambda_rom, self.inv_lambda_format)):
            if rom is not None and (len(rom) != len(self.epsilon_rom) or not fmt.contains(np.array(rom)).all()):
                problems.append(f"{name}_rom must have {len(self.epsilon_rom)} entries inside {fmt}")
        if not self.beta_format.contains(np.array(self.two_beta)):
            problems.append(f"two_beta {self.two_beta} lies outside {self.beta_format}")
        if self.learn_rounding not in LEARN_ROUNDING:
            problems.append(f"learn_rounding {self.learn_rounding!r} is not one of {', '.join(LEARN_ROUNDING)}")
        if (self.eta is None) != (self.eta_format is None):
            problems.append("eta and eta_format are both given or both None")
        elif self.eta is not None and self.eta_format is not None:
            if not self.eta_format.contains(np.array(self.eta)).all() or min(self.eta, default=0) < 0:
                problems.append(f"eta {self.eta} must be non-negative and inside {self.eta_format}")
            if self.increment.frac < self.weight.frac or self.increment.width - self.increment.frac != (
                    self.weight.width - self.weight.frac):
                problems.append("increment must be the weight format plus guard fraction bits")
        if problems:
            raise ValueError("inconsistent FixedPointSpec: " + "; ".join(problems))

    @property
    def guard(self) -> int:
        """g: the increment's fraction bits below the weight LSB (the stochastic-rounding word width)."""
        return self.increment.frac - self.weight.frac

    @property
    def steps(self) -> int:
        """T, the largest step counter the ROMs cover."""
        return len(self.epsilon_rom)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FixedPointSpec:
        """Rebuild a spec from :meth:`to_dict` output (formats as ``{"width", "frac"}``, ROMs as lists)."""
        data = dict(data)
        try:
            for key, value in data.items():
                if isinstance(value, dict):
                    data[key] = FixedFormat(**value)
                elif isinstance(value, list):
                    data[key] = tuple(int(v) for v in value)
            return cls(**data)
        except (TypeError, ValueError) as error:
            raise PoiseError(f"the fixed-point spec is malformed: {error}") from None


def rom_steps(spec: NetworkSpec) -> int:
    """T: the largest 1-based step counter of a free + nudged run of ``spec``."""
    options = spec.spiking or SpikingOptions()
    if options.continue_time:
        return spec.steps_free + spec.steps_nudge
    return max(spec.steps_free, spec.steps_nudge)


def weight_frac(magnitude: float, width: int) -> int:
    """The most fraction bits with which ``±magnitude`` still fits a ``width``-bit format after rounding."""
    if magnitude <= 0:
        return width - 1
    frac = width - 1 - int(np.ceil(np.log2(magnitude)))
    while np.floor(magnitude * 2.0**frac + 0.5) > (1 << (width - 1)) - 1:
        frac -= 1
    if frac < 0:
        raise PoiseError(f"weights up to {magnitude:g} do not fit {width} bits with a non-negative fraction")
    return min(frac, width - 1)


def derive_fixed_spec(
    spec: NetworkSpec,
    params: dict[str, np.ndarray],
    *,
    weight_bits: int = 8,
    state_frac: int = 14,
    schedule_frac: int = 16,
    inv_lambda_frac: int = 12,
    increment_guard: int = 8,
    rounding: str = "half_up",
    eta_bits: int = 16,
    learn_rounding: str = "stochastic",
    weight_headroom: int = 0,
    learning: bool = False,
) -> FixedPointSpec:
    """The fixed-point spec of the spiking network ``spec`` with trained ``params`` (w0, b0, w1, …).

    One ``weight_bits`` format for all weights, with as many fraction bits as the largest |w| allows (at
    most ``state_frac``); every other width follows from bounds so that no register can saturate:
    |u| ≤ the largest column L1 norm of the weights a neuron sums (ALGORITHMS.md §4.1), v lies in u's range,
    |p| ≤ |u| + |b| + |W₀ᵀx| (current mode) + 2|β|, |a|, |φ| < 2·max(1/λ) (one guard bit over the bound).

    On-chip learning (docs/FIXED_POINT.md "On-chip learning"): ``eta`` holds η_l/(|β|·T⁺) per weight layer,
    rounded half up to ``eta_bits`` significant bits (``eta_format``); ``learn_rounding`` is ``stochastic``
    (LFSR) or ``nearest``. ``weight_headroom`` gives up that many weight fraction bits so that learning can
    grow the weights past their initial range; ``learning=True`` sizes u, v and p for any weights of the
    weight format (every |w| at its maximum) instead of the given ones, so no register saturates as the
    weights change.

    Raises
    ------
    PoiseError
        If the spec is not a sigma-delta spiking network with a scheduled (non-OSA) ε.
    """
    options = spec.spiking
    if spec.model != "spiking" or options is None or options.encoder != "sigma_delta":
        raise PoiseError("the fixed-point model implements the sigma-delta spiking network only")
    if spec.epsilon.kind == "osa":
        raise PoiseError("the fixed-point model needs a scheduled ε (OSA needs a divider per neuron)")
    weights = [np.asarray(params[f"w{i}"], np.float64) for i in range(len(spec.layers) - 1)]
    biases = [np.asarray(params[f"b{i}"], np.float64) for i in range(len(spec.layers) - 1)]
    w_max = max(float(np.abs(w).max()) for w in weights)
    frac_w = min(weight_frac(w_max, weight_bits), state_frac) - weight_headroom
    if frac_w < 0:
        raise PoiseError(f"a weight headroom of {weight_headroom} bits leaves no fraction bits")
    weight = FixedFormat(weight_bits, frac_w)
    raw = [np.abs(quantise(w, weight)) for w in weights]
    bias_max = max(int(np.abs(np.floor(b * 2.0**frac_w + 0.5)).max()) for b in biases)
    bias = format_holding(bias_max, frac_w)
    if learning:  # any weights and biases of the formats: the learned ones may go anywhere inside them
        raw = [np.full_like(r, -weight.min_raw) for r in raw]
        bias_max = -bias.min_raw
    spike_input = options.input_mode == "spike"
    u_max = 0  # largest Σ|w| a neuron's accumulator sums, raw
    for layer in range(len(raw)):
        below = raw[layer].sum(axis=0) if (layer > 0 or spike_input) else 0
        above = raw[layer + 1].sum(axis=1) if layer + 1 < len(raw) else 0
        u_max = max(u_max, int(np.max(below + above)))
    accumulator = format_holding(u_max, frac_w)
    shift = state_frac - frac_w
    drive = 0  # current mode: |W₀ᵀx| in state LSBs, rounded up
    if not spike_input:
        drive = (int(raw[0].sum(axis=0).max()) * PIXEL.max_raw << shift >> PIXEL.frac) + 1
    two_beta = int(np.floor(2 * abs(spec.beta) * 2.0**schedule_frac + 0.5))
    beta_format = format_holding(two_beta, schedule_frac)
    p_max = (u_max << shift) + (bias_max << shift) + drive + ((1 << state_frac) * 2 * two_beta >> schedule_frac)
    steps = rom_steps(spec)
    schedule = FixedFormat(schedule_frac + 2, schedule_frac)
    eps = spec.epsilon.table(steps)
    if eps.max() > 1 or eps.min() <= 0:
        raise PoiseError(f"ε must lie in (0, 1], but {spec.epsilon.describe()} leaves it")
    lam_rom = inv_rom = None
    inv_max = 1.0
    inv_format = format_holding(1 << inv_lambda_frac, inv_lambda_frac)
    if options.predictive is not None:
        lam = options.predictive.table(steps)
        if lam.max() > 1 or lam.min() <= 0:
            raise PoiseError(f"λ must lie in (0, 1], but {options.predictive.describe()} leaves it")
        inv = 1.0 / lam.astype(np.float64)
        inv_max = float(inv.max())
        inv_format = format_holding(int(np.floor(inv_max * (1 << inv_lambda_frac) + 0.5)), inv_lambda_frac)
        lam_rom = tuple(int(v) for v in quantise(lam, schedule))
        inv_rom = tuple(int(v) for v in quantise(inv, inv_format))
    return FixedPointSpec(
        weight=weight, bias=bias, pixel=PIXEL,
        state=FixedFormat(state_frac + 2, state_frac),
        accumulator=accumulator,
        decoded=format_holding(u_max << shift, state_frac),
        pressure=format_holding(p_max, state_frac),
        encoder=format_holding(2 * int(np.ceil(inv_max)) << state_frac, state_frac),
        increment=FixedFormat(weight_bits + increment_guard, frac_w + increment_guard),
        epsilon_format=schedule, lambda_format=schedule, inv_lambda_format=inv_format, beta_format=beta_format,
        epsilon_rom=tuple(int(v) for v in quantise(eps, schedule)),
        lambda_rom=lam_rom, inv_lambda_rom=inv_rom, two_beta=two_beta, rounding=rounding,
        **learning_constants(spec, eta_bits), learn_rounding=learn_rounding,
    )


def learning_constants(spec: NetworkSpec, eta_bits: int = 16) -> dict[str, Any]:
    """η_l/(|β|·T⁺) per weight layer as raw words of one format with ``eta_bits`` significant bits for the
    largest (plus a sign bit), rounded half up: ``{"eta_format", "eta"}`` (both None without a nudged phase)."""
    if spec.steps_nudge < 1 or spec.beta == 0:
        return {"eta_format": None, "eta": None}
    etas = np.array(spec.learning_rates, np.float64) / (abs(spec.beta) * spec.steps_nudge)
    largest = float(etas.max())
    frac = eta_bits - int(np.ceil(np.log2(largest))) if largest > 0 else eta_bits
    while np.floor(largest * 2.0**frac + 0.5) >= 1 << eta_bits:
        frac -= 1
    fmt = FixedFormat(max(eta_bits + 1, frac + 1), frac)
    return {"eta_format": fmt, "eta": tuple(int(v) for v in quantise(etas, fmt))}


# -- the random source of stochastic rounding (on-chip learning) ---------------------------------------------
LFSR_WIDTH = 32
LFSR_TAPS = 0x80200003  # Galois toggle mask of x^32 + x^22 + x^2 + x + 1 (maximal length, period 2^32 − 1)
LFSR_SEED = 0x1  # any non-zero 32-bit state


def lfsr_step(state: int) -> int:
    """One step of the 32-bit Galois LFSR, bit-serial (the reference the RTL matches): the bit shifted out
    of the LSB, when 1, toggles the taps of the right-shifted state."""
    out = state & 1
    state >>= 1
    return state ^ LFSR_TAPS if out else state


def lfsr_words_reference(state: int, bits: int, count: int) -> tuple[list[int], int]:
    """``count`` random words of ``bits`` bits, bit-serially: each word steps the LFSR ``bits`` times and
    then takes the low ``bits`` bits of the state. Returns (words, new state)."""
    words = []
    for _ in range(count):
        for _ in range(bits):
            state = lfsr_step(state)
        words.append(state & ((1 << bits) - 1))
    return words, state


@functools.lru_cache(maxsize=8)
def lfsr_jumps(bits: int, block: int) -> np.ndarray:
    """(block, 32) uint64: column b of row k is the state reached from the basis state 1 << b after
    (k + 1)·``bits`` steps. The LFSR is linear over GF(2), so any state's future is an XOR of these."""
    states = np.uint64(1) << np.arange(LFSR_WIDTH, dtype=np.uint64)
    taps = np.uint64(LFSR_TAPS)
    jumps = np.empty((block, LFSR_WIDTH), np.uint64)
    for k in range(block):
        for _ in range(bits):
            out = states & np.uint64(1)
            states = (states >> np.uint64(1)) ^ (out * taps)
        jumps[k] = states
    return jumps


class Lfsr:
    """The LFSR of :func:`lfsr_words_reference`, vectorised: :meth:`words` draws many words at once with the
    jump table, bit-identical to the bit-serial reference."""

    BLOCK = 4096

    def __init__(self, bits: int, seed: int = LFSR_SEED) -> None:
        if not 0 < seed < 1 << LFSR_WIDTH:
            raise ValueError(f"the LFSR seed must be a non-zero {LFSR_WIDTH}-bit value, not {seed}")
        if not 1 <= bits <= LFSR_WIDTH:
            raise ValueError(f"random words have 1..{LFSR_WIDTH} bits, not {bits}")
        self.bits, self.state = bits, seed
        self.jumps = lfsr_jumps(bits, self.BLOCK)

    def words(self, count: int) -> np.ndarray:
        """The next ``count`` words as int64, in the order drawn."""
        out = np.empty(count, np.int64)
        mask = np.uint64((1 << self.bits) - 1)
        for start in range(0, count, self.BLOCK):
            n = min(self.BLOCK, count - start)
            states = np.zeros(n, np.uint64)
            for b in range(LFSR_WIDTH):
                if self.state >> b & 1:
                    states ^= self.jumps[:n, b]
            out[start:start + n] = (states & mask).astype(np.int64)
            self.state = int(states[-1])
        return out
