r"""Fermi–Dirac occupations, written to be stable for any β(E − μ).

With x = (E − μ)/T (k_B = 1, T in energy units):

* f0(E) = 1/(1 + e^x) = σ(−x)                      (σ the logistic function)
* f0'(E) = ∂f0/∂E = −σ(x) σ(−x) / T
* the grand-potential weight of seed eq. (5): −(1/β) ln(1 − f0) = T · softplus(−x)
  (≥ 0, no log(0) and no overflow for |x| → ∞).

T = 0 is the documented limit: f0 = θ(μ − E) (½ at E = μ), −(1/β) ln(1 − f0) = max(μ − E, 0).
f0' is a δ-function at T = 0; Fermi-surface quantities require T > 0 and raise otherwise
(see :func:`check_temperature`). Negative T is always an error.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float


def _scaled(energy, mu, temperature):
    positive = temperature > 0
    t_safe = jnp.where(positive, temperature, 1.0)
    return (energy - mu) / t_safe, positive


def fermi_dirac(energy: Array, mu: Array, temperature: Array) -> Array:
    """f0(E; μ, T); the T = 0 limit is the step θ(μ − E) with ½ at E = μ."""
    x, positive = _scaled(energy, mu, temperature)
    step = jnp.where(energy < mu, 1.0, jnp.where(energy > mu, 0.0, 0.5))
    return jnp.where(positive, jax.nn.sigmoid(-x), step)


def fermi_dirac_derivative(energy: Array, mu: Array, temperature: Array) -> Array:
    """∂f0/∂E = −f0(1 − f0)/T (≤ 0). Zero where T = 0 (callers must reject T = 0 first)."""
    x, positive = _scaled(energy, mu, temperature)
    t_safe = jnp.where(positive, temperature, 1.0)
    return jnp.where(positive, -jax.nn.sigmoid(x) * jax.nn.sigmoid(-x) / t_safe, 0.0)


def grand_potential_weight(energy: Array, mu: Array, temperature: Array) -> Array:
    """−(1/β) ln(1 − f0) = T softplus((μ − E)/T); → max(μ − E, 0) at T = 0."""
    x, positive = _scaled(energy, mu, temperature)
    return jnp.where(positive, temperature * jax.nn.softplus(-x), jnp.maximum(mu - energy, 0.0))


def fermi_weights(energy: Array, mu: Array, temperature: Array, *, derivative: bool = False):
    """f0, −(1/β) ln(1 − f0) and optionally f0' together, sharing one exp(−|x|).

    Same values as :func:`fermi_dirac`, :func:`grand_potential_weight` and
    :func:`fermi_dirac_derivative` (T = 0 limits included), at about half their combined cost — the
    occupation factors for ~100 chemical potentials cost as much as a 2×2 eigh per k-point.
    Returns ``(f0, gpw)`` or ``(f0, gpw, f0')``.
    """
    x, positive = _scaled(energy, mu, temperature)
    e = jnp.exp(-jnp.abs(x))
    inv = 1.0 / (1.0 + e)
    f_t = jnp.where(x > 0, e * inv, inv)
    g_t = temperature * (jnp.maximum(-x, 0.0) + jnp.log1p(e))
    step = jnp.where(energy < mu, 1.0, jnp.where(energy > mu, 0.0, 0.5))
    f = jnp.where(positive, f_t, step)
    gpw = jnp.where(positive, g_t, jnp.maximum(mu - energy, 0.0))
    if not derivative:
        return f, gpw
    t_safe = jnp.where(positive, temperature, 1.0)
    dfde = jnp.where(positive, -(e * inv * inv) / t_safe, 0.0)
    return f, gpw, dfde


def check_temperature(temperature: Float[Array, "..."], *, fermi_surface: bool) -> Array:
    """Runtime check (works under jit): T ≥ 0 always; T > 0 for Fermi-surface quantities."""
    temperature = eqx.error_if(
        temperature,
        jnp.any(temperature < 0) | jnp.any(~jnp.isfinite(temperature)),
        "temperature must be finite and >= 0 (energy units, k_B = 1).",
    )
    if fermi_surface:
        temperature = eqx.error_if(
            temperature,
            jnp.any(temperature <= 0),
            "this Fermi-surface quantity needs temperature > 0 (f0' is a delta function at T = 0); "
            "use a small positive T, e.g. a few times the mesh's energy resolution.",
        )
    return temperature
