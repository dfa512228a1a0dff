"""The equations of the papers, one small vectorised function each.

Every function works on whole batches (leading axis = image) in float32 and cites its source:
[000] O'Connor, Gavves & Welling 2019; [001] O'Connor's thesis; [002] EqSpike; [004] Scellier et al. 2018.
Index convention of [000]/[001]: ``w[i, j]`` connects pre-neuron i to post-neuron j.
"""

from __future__ import annotations

import numpy as np


def rho(s: np.ndarray) -> np.ndarray:
    """Hard sigmoid ρ(s) = [s]₀¹ ([000] §2.1, [001] §8.3.1)."""
    return np.clip(s, 0.0, 1.0)


def rho_prime(s: np.ndarray) -> np.ndarray:
    """ρ'(s) with the inclusive convention: 1 for 0 ≤ s ≤ 1, else 0.

    The seeds leave ρ' at the boundaries open; the strict convention would freeze a neuron at s = 0
    forever (ALGORITHMS.md §1.1), so the inclusive one is the only workable choice.
    """
    return ((s >= 0.0) & (s <= 1.0)).astype(s.dtype)


def nudge_force(s_out: np.ndarray, target: np.ndarray, beta: float) -> np.ndarray:
    """−β ∂C/∂s for C = ‖s_O − y‖²: the force 2β(y − s) on the output layer ([001] §2.7)."""
    return np.float32(2.0 * beta) * (target - s_out)


def continuous_step(s: np.ndarray, drive: np.ndarray, epsilon: float) -> np.ndarray:
    """One forward-Euler step with clipping, [000] Eq. 3 / [001] Eq. 8.3.

    ``drive`` is ρ'(s) applied to the net input plus any nudge:
    ``s ← [(1 − ε)s + ε·drive]₀¹``.
    """
    return np.clip((1.0 - epsilon) * s + epsilon * drive, 0.0, 1.0)


def spiking_state_step(s: np.ndarray, pressure: np.ndarray, epsilon: np.ndarray | float) -> np.ndarray:
    """State update of the binary network, [000] Eq. 14 line 2 (same clipped Euler form as Eq. 3).

    ``pressure`` = ρ'(s)(v + b) (+ nudge on outputs); ``epsilon`` may be per neuron (OSA).
    """
    return np.clip((1.0 - epsilon) * s + epsilon * pressure, 0.0, 1.0)


def predictive_decode(v: np.ndarray, u: np.ndarray, lam: float) -> np.ndarray:
    """Predictive-coding decoder, [000] Eq. 13: v ← (1 − λ)v + λu."""
    return (1.0 - lam) * v + lam * u


def predictive_encode(rho_now: np.ndarray, rho_prev: np.ndarray, lam: float) -> np.ndarray:
    """Predictive-coding encoder, [000] Eq. 12: a = (ρ(sᵗ) − (1 − λ)ρ(sᵗ⁻¹)) / λ."""
    return (rho_now - (1.0 - lam) * rho_prev) / lam


def sigma_delta(a: np.ndarray, phi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sigma-delta encoder, [000] Eq. 11: q = [φ + a > ½], φ ← φ + a − q. Returns (q, φ)."""
    total = phi + a
    q = (total > 0.5).astype(a.dtype)
    total -= q  # a fresh array: updating it in place saves an allocation per step
    return q, total


def stochastic_encode(a: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Stochastic rounding, [000] Eq. 8, defined for any a as q = [a > U(0,1)] (ALGORITHMS.md B.9)."""
    return (a > rng.random(a.shape, dtype=np.float32)).astype(a.dtype)


def contrastive_weight_update(
    pre_plus: np.ndarray, post_plus: np.ndarray, pre_minus: np.ndarray, post_minus: np.ndarray, scale: float
) -> np.ndarray:
    """Contrastive EqProp update, [001] Eq. 2.12, averaged over the batch.

    Δw = (η/β)·(ρ(sᵢ⁺)ρ(sⱼ⁺) − ρ(sᵢ⁻)ρ(sⱼ⁻)); ``scale`` is η/β (its sign carries the sign of β).
    """
    batch = pre_plus.shape[0]
    # One product over both phases, [ρᵢ⁺ ρᵢ⁻]ᵀ·[cρⱼ⁺; −cρⱼ⁻], so no weight-sized temporaries are made.
    pre = np.concatenate([pre_plus, pre_minus])
    post = np.concatenate([post_plus, -post_minus]) * np.float32(scale / batch)
    return pre.T @ post


def contrastive_bias_update(post_plus: np.ndarray, post_minus: np.ndarray, scale: float) -> np.ndarray:
    """Bias update of [001] Eq. 2.13: Δb = (η/β)(ρ(s⁺) − ρ(s⁻)), averaged over the batch."""
    return scale * (post_plus - post_minus).mean(axis=0)


def glorot_uniform(fan_in: int, fan_out: int, rng: np.random.Generator) -> np.ndarray:
    """Glorot-uniform weights ±√(6/(fan_in + fan_out)) (authors' code default, [004] App. C)."""
    bound = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-bound, bound, size=(fan_in, fan_out)).astype(np.float32)


def osa_nu(steps: int, target: float, nu0: float = 1.0) -> np.ndarray:
    """The data-independent OSA sequence νⁿ = νⁿ⁻¹/(1 + νⁿ⁻¹ − ν̄), [001] App. E.1 step 2.

    ν⁰ = 1 is our choice (the thesis leaves it open); it makes the first estimate take the observation.
    """
    nu = np.empty(steps, dtype=np.float64)
    previous = nu0
    for n in range(steps):
        previous = previous / (1.0 + previous - target)
        nu[n] = previous
    return nu.astype(np.float32)


class OptimalStepsize:
    """George & Powell's OSA per neuron, [001] App. E.1 (steps 0-4), vectorised over (batch, neurons).

    The observation is the neuron's total pressure (authors' code); ``step(x)`` returns αⁿ, the ε to
    use this step. α¹ = 1; the division is regularised as 1 − (σ̄² + e)/(δ̄ + e) with e = 1e−15.
    """

    REGULARISER = np.float32(1e-15)

    def __init__(self, shape: tuple[int, ...], nu: np.ndarray) -> None:
        self.nu = nu
        self.n = 0
        self.bias = np.zeros(shape, np.float32)  # β̄
        self.delta = np.zeros(shape, np.float32)  # δ̄
        self.lam = np.zeros(shape, np.float32)  # λ̄ (not the predictive-coding λ)
        self.theta = np.zeros(shape, np.float32)  # θ̄

    def step(self, observation: np.ndarray) -> np.ndarray:
        nu = self.nu[min(self.n, len(self.nu) - 1)]
        self.n += 1
        error = observation - self.theta
        self.bias = (1 - nu) * self.bias + nu * error
        self.delta = (1 - nu) * self.delta + nu * error * error
        if self.n == 1:
            alpha = np.ones_like(observation)
            self.lam = alpha * alpha
        else:
            sigma2 = (self.delta - self.bias * self.bias) / (1 + self.lam)
            alpha = 1 - (sigma2 + self.REGULARISER) / (self.delta + self.REGULARISER)
            self.lam = (1 - alpha) ** 2 * self.lam + alpha * alpha
        self.theta = (1 - alpha) * self.theta + alpha * observation
        return alpha


def general_dynamics_update(
    pre_free: np.ndarray, post_free: np.ndarray, post_nudged: np.ndarray, scale: float
) -> np.ndarray:
    """The single end-of-phase update of [004] Eq. 56, averaged over the batch.

    ΔW = α·(∂μ/∂W)(h⁰)·(h^β − h⁰)/β; since ∂μᵢ/∂Wᵢⱼ = ρ(hⱼ) this is ΔWᵢⱼ = α·ρ(h⁰ⱼ)(h^βᵢ − h⁰ᵢ)/β
    (ALGORITHMS.md §1.4). Returned pre × post like every weight here; ``pre_free`` is ρ(h⁰) of the
    pre-synaptic layer, ``scale`` is α/β (its sign carries the sign of β).
    """
    batch = pre_free.shape[0]
    return (scale / batch) * (pre_free.T @ (post_nudged - post_free))
