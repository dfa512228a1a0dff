"""Bit-exact reference of one neuron update (steps 2-5 of docs/FIXED_POINT.md), the contract of the RTL.

:func:`neuron_update` is the per-neuron arithmetic of :class:`~poise.golden.integer.IntegerSpikingModel`
(its ``run`` and ``encode``) with every input a per-neuron array: the registers, the constant offset and the
schedule words of the step, so that the RTL's test vectors, including values the network never reaches,
can be checked one by one. It composes :func:`~poise.golden.fixed.round_shift`,
:meth:`~poise.golden.fixed.FixedFormat.saturate` and :func:`~poise.golden.fixed.sigma_delta_fixed` in the
integer model's order; ``tests/test_neuron_ref.py`` replays a traced image through it register by register.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from poise.golden.fixed import FixedPointSpec, round_shift, sigma_delta_fixed
from poise.golden.integer import IntegerSpikingModel, Trace

# Fields of one update, as the RTL's stream payloads name them (poise.rtl.neuron).
INPUTS = ("u", "v", "s", "rho_prev", "phi", "offset", "epsilon", "lam", "inv_lam", "nudge", "y", "beta_negative")
OUTPUTS = ("v", "p", "s", "a", "phi", "rho_prev", "q")


def input_fields(fixed: FixedPointSpec) -> tuple[str, ...]:
    """The input fields ``fixed`` needs: without predictive coding there are no λ and 1/λ words."""
    if fixed.lambda_rom is None:
        return tuple(name for name in INPUTS if name not in ("lam", "inv_lam"))
    return INPUTS


def neuron_update(fixed: FixedPointSpec, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One step t of a batch of neurons, each a separate update; raw integers of ``fixed``'s formats.

    Inputs (int arrays broadcast together, keys :func:`input_fields`): ``u`` the accumulated input
    (accumulator format, weight LSBs); ``v``, ``s``, ``rho_prev`` (= s of step t − 1 for a neuron), ``phi`` the
    registers; ``offset`` the bias plus the current-mode drive in state LSBs; ``epsilon``, ``lam``,
    ``inv_lam`` the ROM words of step t; ``nudge`` = 1 for an output neuron in a nudged phase, ``y`` its
    target bit and ``beta_negative`` = 1 when β < 0. With ``rs`` = :func:`round_shift` by the ROM word's
    fraction bits and the spec's rounding rule, and ``sat`` each register's saturation:

    2. ``v ← sat(v + rs((u·2^(F−f_w) − v)·λ_t))``, [000] Eq. 13; ``v ← sat(u·2^(F−f_w))`` without λ ROM;
    3. ``p = sat(v + offset ± rs((y·2^F − s)·2|β|))`` (the nudge only when ``nudge``; its sign is that of β,
       applied after rounding), [000] Eq. 14 with [001] §2.7's 2β(y − s);
    4. ``s ← clip(s + rs((p − s)·ε_t), 0, 2^F)``, [000] Eq. 14;
    5. ``a = sat(ρ_prev + rs((s − ρ_prev)·(1/λ)_t))``, [000] Eq. 12 (``a = s`` without λ ROM), then
       ``q, φ ← sigma_delta_fixed(a, φ)``, [000] Eq. 11, and ``ρ_prev ← s`` (the new s).

    Returns the int64 arrays :data:`OUTPUTS`: the new ``v``, ``p``, the new ``s``, ``a``, the new ``phi``,
    ``rho_prev`` for the next step (the new s) and the spike ``q``.
    """
    values = {name: np.asarray(inputs[name], dtype=np.int64) for name in input_fields(fixed)}
    u, v, s, rho_prev = values["u"], values["v"], values["s"], values["rho_prev"]

    def rs(raw: np.ndarray, shift: int) -> np.ndarray:
        return round_shift(raw, shift, fixed.rounding)

    aligned = u << (fixed.state.frac - fixed.weight.frac)
    if fixed.lambda_rom is None:
        v_new = fixed.decoded.saturate(aligned)
    else:
        v_new = fixed.decoded.saturate(v + rs((aligned - v) * values["lam"], fixed.lambda_format.frac))
    target = values["y"] * fixed.state.one
    nudge = rs((target - s) * fixed.two_beta, fixed.beta_format.frac)
    nudge = np.where(values["beta_negative"] != 0, -nudge, nudge) * (values["nudge"] != 0)
    p = fixed.pressure.saturate(v_new + values["offset"] + nudge)
    s_new = np.clip(s + rs((p - s) * values["epsilon"], fixed.epsilon_format.frac), 0, fixed.state.one)
    if fixed.inv_lambda_rom is None:
        a = s_new
    else:
        a = fixed.encoder.saturate(rho_prev + rs((s_new - rho_prev) * values["inv_lam"], fixed.inv_lambda_format.frac))
    q, phi_new = sigma_delta_fixed(a, values["phi"], fixed.encoder)
    return {"v": v_new, "p": p, "s": s_new, "a": a, "phi": phi_new, "rho_prev": s_new, "q": q}


def trace_updates(model: IntegerSpikingModel, trace: Trace, pixels: np.ndarray, label: int | None = None,
                  beta_sign: int = 1) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The per-neuron updates of a traced image, flattened over (step, neuron), and what each must give.

    ``trace`` is ``model.trace(pixels, label, beta_sign)``. Step k's inputs are its traced ``u``, the
    registers of step k − 1 (zero before the first step), the image's offset, the ROM words of its step
    counter t and, in the nudged phase, the output neurons' nudge with the one-hot target of ``label``.
    The expected outputs are the registers traced at step k, with ``rho_prev`` the value step k + 1 uses.
    """
    fixed, registers = model.fixed, trace.registers
    steps, n = registers["s"].shape
    previous = {name: np.vstack([np.zeros((1, n), np.int64), registers[name][:-1]]) for name in ("v", "s", "phi")}
    rom = np.asarray(trace.t, dtype=np.int64) - 1
    column = np.ones((1, n), np.int64)
    outputs = np.zeros(n, np.int64)
    outputs[trace.spans[-1]] = 1
    nudged = (np.arange(steps) >= model.spec.steps_free)[:, np.newaxis] & (label is not None)
    target = np.zeros(n, np.int64)
    if label is not None:
        target[trace.spans[-1].start + label] = 1
    inputs = {
        "u": registers["u"], "v": previous["v"], "s": previous["s"], "rho_prev": registers["rho_prev"],
        "phi": previous["phi"], "offset": np.broadcast_to(model.offset(pixels[np.newaxis]), (steps, n)),
        "epsilon": np.array(fixed.epsilon_rom)[rom][:, np.newaxis] * column,
        "nudge": nudged * outputs, "y": np.broadcast_to(target, (steps, n)),
        "beta_negative": np.full((steps, n), int(beta_sign < 0)),
    }
    if fixed.lambda_rom is not None:
        inputs["lam"] = np.array(fixed.lambda_rom)[rom][:, np.newaxis] * column
        inputs["inv_lam"] = np.array(fixed.inv_lambda_rom)[rom][:, np.newaxis] * column
    expected = {name: registers[name] for name in ("v", "p", "s", "a", "phi", "q")}
    expected["rho_prev"] = registers["s"]
    flat = {name: np.ascontiguousarray(value, dtype=np.int64).ravel() for name, value in inputs.items()}
    return flat, {name: np.ascontiguousarray(value, dtype=np.int64).ravel() for name, value in expected.items()}
