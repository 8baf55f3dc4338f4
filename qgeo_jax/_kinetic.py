r"""Kinetic (electric-field-induced) magnetization δM = α E: the responses of seed eqs. (6)-(9).

Response tensors α^{ij} (δM^i = α^{ij} E_j, 3×3, every field direction at once) in model units:
ħ = e = k_B = 1, electron charge −e, and the field enters as the electron's potential energy
+e E·r, so that the relaxation-time distribution is f1 = eτ (v_n·E) f0' (seed, Sec. III; Xiao,
Chang, Niu, RMP 82, 1959 (2010), doi:10.1103/RevModPhys.82.1959).

=========================  ==========================================================  ====
part, mechanism             α^{ij}                                                      seed
=========================  ==========================================================  ====
spin, extrinsic             −g τ Σ_n ∫ ⟨S^i⟩_n v_n^j f0'(E_n)     (Edelstein)            (6)
spin, intrinsic             −g Σ_n ∫ Φ_n^{ij} f0(E_n)                                   (7)
orbital, extrinsic          +τ Σ_n ∫ m_n^i v_n^j f0'(E_n)         (orbital Edelstein)    (8)
orbital, intrinsic          Σ_n ∫ F_n^{ij} f0(E_n)   (:mod:`qgeo_jax._magnetoelectric`)  (9)
=========================  ==========================================================  ====

∫ = ∫ d^dk/(2π)^d (the mesh weights); v_n = ∂_k E_n; f0' = ∂f0/∂E; m_n the orbital-moment vector
(m^k = ½ ε_{ijk} m^{ij}); S = σ/2 in units of ħ with an explicit g-factor g (default 2: the seed
writes −μ_B⟨S⟩/ħ with S = ħσ, which is g = 2); Φ_n the spin Berry curvature

.. math:: Φ_n^{ij} = −2\,\mathrm{Im}\sum_{m≠n}\frac{⟨n|S_i|m⟩⟨m|∂_jH|n⟩}{(E_n − E_m)^2}.

Sign of the intrinsic spin term (derived; the tests confirm it with open-boundary flakes): for
V = +e E·r the interband position is r_{mn} = A_{mn} = i v_{mn}/(E_n − E_m), the first-order state
is |δn⟩ = Σ_{m≠n} |m⟩ e E·A_{mn}/(E_n − E_m), and δ⟨S_i⟩_n = 2 Re⟨n|S_i|δn⟩ = e Φ_n^{ij} E_j. With
M^S = −g μ_B ⟨S⟩/ħ this is seed eq. (7) (Garate & Franz, PRL 104, 146802 (2010),
doi:10.1103/PhysRevLett.104.146802).

Units (E = energy unit, L = length unit, d = model dimension; field in E/(e·L), τ in ħ/E):

* spin parts: (μ_B per L^d) per field unit = μ_B·e·L^{1−d}/E; convert δM with
  :func:`qgeo_jax.units.spin_magnetization`;
* orbital parts: (e·E·L²/ħ per L^d) per field unit = e²·L³/ħ per L^d; convert δM with
  :func:`qgeo_jax.units.orbital_magnetization`.

Spin and orbital parts come in different model units (μ_B vs e·E·L²/ħ are related through the
electron mass, which a model in its own units does not know), so there is no ``part="total"``:
add the two after converting each to SI.

Degeneracies. Band-resolved ⟨S⟩_n, v_n and m_n are averaged over each degenerate set
(|E_n − E_m| < ``degen_tol``) before they are multiplied, so every α is gauge invariant (e.g.
Kramers pairs of PT-symmetric bands). Interband terms inside a degenerate set are dropped; in the
Fermi-sea sum of eq. (7) they would cancel anyway (equal occupations). Limitation: in a *metal*
whose bands are split by δ ≪ T, the pair term (f_n − f_m) Im(S_nm v_mn)/(E_n − E_m)² of eq. (7)
stays finite as δ → 0 but is absent at δ = 0 (the clean-limit formula is discontinuous there; a
physical broadening ħ/τ ≫ δ selects the δ = 0 value). Insulators are continuous in δ (tested).
"""

from __future__ import annotations

import functools

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._bz import DEFAULT_CHUNK, AbstractMesh, integrate
from ._config import require_x64
from ._geometry import _pair_products, degenerate_average
from ._linalg import denominators, eigh
# Imported at module level, never lazily inside a trace: a module first imported while JAX traces
# would build its module-level jnp constants as tracers of that trace (a leak).
from ._magnetoelectric import intrinsic_orbital_integrand
from ._validate import check_tau
from ._occupation import fermi_dirac
from ._responses import as_mu_temperature, curl_products
from ._spectrum import DEFAULT_DEGEN_TOL, Spectrum, hamiltonian_and_gradient, spectrum
from .models._base import AbstractModel

PARTS = ("spin", "orbital")
MECHANISMS = ("extrinsic", "intrinsic")


# --- band-resolved kernel -------------------------------------------------------------------------
def spin_berry_curvature(
    spec: Spectrum, *, degen_tol: float = DEFAULT_DEGEN_TOL, average_degenerate: bool = False
) -> Float[Array, "n 3 3"]:
    r"""Spin Berry curvature Φ_n^{ij} = −2 Im Σ_{m≠n} ⟨n|S_i|m⟩⟨m|∂_jH|n⟩/(E_n − E_m)² (seed eq. 7).

    Garate & Franz, PRL 104, 146802 (2010), doi:10.1103/PhysRevLett.104.146802. Indices: band n,
    spin component i, derivative (field) direction j. Units ħ·L/E (S in ħ, ∂H in E·L), such that
    δ⟨S_i⟩_n = e Φ_n^{ij} E_j for the potential +e E·r. Pairs with |E_n − E_m| < ``degen_tol`` are
    dropped; ``average_degenerate=True`` averages Φ_n over each degenerate set (gauge invariant).
    Raises ``ValueError`` for a model without spin operators.
    """
    if spec.spin is None:
        raise ValueError(
            "the spin Berry curvature needs spin operators, but the model has none: build it with "
            "spin operators (`spin=` for TightBinding/from_function) or use a spinful model."
        )
    _, inv2, degenerate = denominators(spec.energies, degen_tol)
    im = jnp.imag(_pair_products(spec.spin, spec.velocity))
    phi = -2.0 * jnp.einsum("ijnm,nm->nij", im, inv2)
    return degenerate_average(phi, degenerate) if average_degenerate else phi


# --- per-k integrands (without τ, without the mesh weight) ----------------------------------------
def _fermi_derivative(energy, mu, temperature):
    """f0'(E) = −e^{−|x|}/(T (1 + e^{−|x|})²), x = (E − μ)/T.

    The same function as :func:`qgeo_jax.fermi_dirac_derivative` (even in x, never overflows) with
    one exponential instead of two logistic calls: it dominates the cost of the extrinsic integrands
    of small models. T > 0 is checked by the caller; T = 0 gives 0 here.
    """
    positive = temperature > 0
    t_safe = jnp.where(positive, temperature, 1.0)
    a = jnp.exp(-jnp.abs((energy - mu) / t_safe))
    return jnp.where(positive, -a / (t_safe * (1.0 + a) ** 2), 0.0)


def _diagonal(u, op):
    """Re ⟨n|op_a|n⟩ for op of shape (a, N, N), returned as (N, a); no full rotation U†OU.

    For N ≤ 16 a broadcast-multiply-reduce (tiny batched dot_generals are slow on CPU, see
    PERF_NOTES), otherwise one GEMM per component.
    """
    if u.shape[-1] <= 16:
        prod = jnp.conj(u)[None, :, None, :] * op[:, :, :, None] * u[None, None, :, :]
        return jnp.real(jnp.sum(prod, axis=(1, 2))).T
    return jnp.real(jnp.sum(jnp.conj(u)[None] * (op @ u[None]), axis=1)).T


def _weighted_outer(weights, a, b):
    """Σ_n w[..., n] a[n, i] b[n, j] as one (…, n) × (n, 9) product (faster than a 3-way einsum)."""
    outer = (a[:, :, None] * b[:, None, :]).reshape(a.shape[0], -1)
    return (weights @ outer).reshape(weights.shape[:-1] + (a.shape[1], b.shape[1]))


def _extrinsic_spin(model, k, mu, temperature, degen_tol):
    # Only diagonal matrix elements are needed: no velocity/spin rotation of the full matrices.
    h, dh = hamiltonian_and_gradient(model, k)
    energies, u = eigh(h, degen_tol)
    _, _, degenerate = denominators(energies, degen_tol)
    s = jnp.asarray(model.spin_operators(), dtype=u.dtype)
    spin = degenerate_average(_diagonal(u, s), degenerate)
    vel = degenerate_average(_diagonal(u, dh), degenerate)
    df = _fermi_derivative(energies, mu[..., None], temperature[..., None])
    return _weighted_outer(df, spin, vel)


def _intrinsic_spin(model, k, mu, temperature, degen_tol):
    spec = spectrum(model, k, degen_tol=degen_tol)
    _, inv2, _ = denominators(spec.energies, degen_tol)
    f = fermi_dirac(spec.energies, mu[..., None], temperature[..., None])
    im = jnp.imag(_pair_products(spec.spin, spec.velocity))
    # Σ_n f_n Φ_n = −Σ_{nm} (f_n − f_m) Im(S_nm v_mn)/(E_n − E_m)², because Im(S_nm v_mn) is odd
    # under n ↔ m. With f_n − f_m, pairs of equal occupation (the whole occupied manifold of an
    # insulator, split Kramers partners) cancel exactly instead of through two large terms.
    n = spec.energies.shape[0]
    df = (f[..., :, None] - f[..., None, :]).reshape(f.shape[:-1] + (n * n,))
    kernel = (im * inv2).reshape(9, n * n).T  # [(n, m), (i, j)]
    return -(df @ kernel).reshape(f.shape[:-1] + (3, 3))


def _extrinsic_orbital(model, k, mu, temperature, degen_tol):
    spec = spectrum(model, k, degen_tol=degen_tol)
    inv1, _, degenerate = denominators(spec.energies, degen_tol)
    morb = -jnp.einsum("cnm,nm->nc", curl_products(spec.velocity, spec.velocity), inv1)
    vel = jnp.real(jnp.diagonal(spec.velocity, axis1=-2, axis2=-1)).T
    morb, vel = degenerate_average(morb, degenerate), degenerate_average(vel, degenerate)
    df = _fermi_derivative(spec.energies, mu[..., None], temperature[..., None])
    return _weighted_outer(df, morb, vel)


def _intrinsic_orbital(model, k, mu, temperature, degen_tol, metric_term=None):
    return intrinsic_orbital_integrand(model, k, mu, temperature, degen_tol=degen_tol, metric_term=metric_term)


_INTEGRANDS = {
    ("spin", "extrinsic"): _extrinsic_spin,
    ("spin", "intrinsic"): _intrinsic_spin,
    ("orbital", "extrinsic"): _extrinsic_orbital,
    ("orbital", "intrinsic"): _intrinsic_orbital,
}


def _validate(model, part, mechanism):
    if part not in PARTS:
        extra = (
            " Spin (μ_B per L^d) and orbital (e·E·L²/ħ per L^d) parts have different model units: "
            "compute both and add them after converting to SI with qgeo_jax.units."
            if part == "total"
            else ""
        )
        raise ValueError(f"unknown part={part!r}; use one of {PARTS}.{extra}")
    if mechanism not in MECHANISMS:
        raise ValueError(f"unknown mechanism={mechanism!r}; use one of {MECHANISMS}.")
    if part == "spin" and model.spin_operators() is None:
        raise ValueError(
            f"part='spin' needs spin operators, but {type(model).__name__} has none (give `spin=` "
            "to TightBinding/from_function, or use a spinful model such as Rashba)."
        )


def kinetic_integrand(
    model: AbstractModel,
    k: Float[Array, " dim"],
    *,
    mu,
    temperature,
    part: str,
    mechanism: str,
    g_factor=2.0,
    degen_tol: float = DEFAULT_DEGEN_TOL,
) -> Float[Array, "... 3 3"]:
    """The k-resolved density of :func:`kinetic_magnetization` at one k (for maps over the BZ).

    α = ∫ d^dk/(2π)^d of this for the intrinsic mechanism, and τ times that for the extrinsic one
    (the density is per unit τ). Output ``broadcast(mu, temperature).shape + (3, 3)``. No
    validation of T or τ here (see :func:`kinetic_magnetization`).
    """
    _validate(model, part, mechanism)
    mu, temperature = jnp.broadcast_arrays(
        jnp.asarray(mu, jnp.float64), jnp.asarray(temperature, jnp.float64)
    )
    out = _INTEGRANDS[(part, mechanism)](model, k, mu, temperature, degen_tol)
    return -jnp.asarray(g_factor, jnp.float64) * out if part == "spin" else out


@eqx.filter_jit
def _kinetic(model, mesh, mu, temperature, scale, part, mechanism, degen_tol, chunk_size, metric_term=None):
    fn = _INTEGRANDS[(part, mechanism)]
    if metric_term is not None:
        fn = functools.partial(fn, metric_term=metric_term)
    per_k = lambda k: fn(model, k, mu, temperature, degen_tol)
    total = integrate(per_k, mesh, chunk_size=chunk_size)
    return scale[..., None, None] * total


def kinetic_magnetization(
    model: AbstractModel,
    mesh: AbstractMesh,
    *,
    mu,
    temperature=0.0,
    part: str,
    mechanism: str,
    tau=None,
    g_factor=2.0,
    degen_tol: float = DEFAULT_DEGEN_TOL,
    chunk_size: int = DEFAULT_CHUNK,
    metric_term: str | None = None,
) -> Float[Array, "... 3 3"]:
    r"""Electric-field-induced magnetization tensor α, δM^i = α^{ij} E_j (seed eqs. 6-9).

    ``part`` ∈ {"spin", "orbital"}, ``mechanism`` ∈ {"extrinsic", "intrinsic"}:

    * spin, extrinsic — Edelstein effect (V. M. Edelstein, Solid State Commun. 73, 233 (1990),
      doi:10.1016/0038-1098(90)90963-C):
      :math:`α^{ij} = −g τ \int\frac{d^dk}{(2π)^d}\sum_n ⟨S^i⟩_n v_n^j f_0'(E_n)`;
    * spin, intrinsic (Garate & Franz, PRL 104, 146802 (2010), doi:10.1103/PhysRevLett.104.146802):
      :math:`α^{ij} = −g \int\frac{d^dk}{(2π)^d}\sum_n Φ_n^{ij} f_0(E_n)`, Φ from
      :func:`spin_berry_curvature`;
    * orbital, extrinsic — orbital Edelstein effect (A. Johansson, J. Phys.: Condens. Matter 36,
      423002 (2024), as cited by the seed):
      :math:`α^{ij} = τ \int\frac{d^dk}{(2π)^d}\sum_n m_n^i v_n^j f_0'(E_n)`;
    * orbital, intrinsic (Xiao, Ren, Xiong, PRB 103, 115432 (2021), doi:10.1103/PhysRevB.103.115432;
      Gao, Yang, Niu, PRL 112, 166601 (2014), doi:10.1103/PhysRevLett.112.166601):
      :math:`α = \int\sum_n F_n f_0` with F_n from :mod:`qgeo_jax._magnetoelectric` (see there for
      the corrected seed eq. 10).

    Conventions: ħ = e = k_B = 1, electron charge −e, the field as potential energy +e E·r, so
    f1 = eτ(v·E) f0'. S = σ/2 in units of ħ, explicit ``g_factor`` (default 2; used only for
    ``part="spin"``).

    ``mu``, ``temperature`` (energy units) broadcast against each other. ``tau`` (units ħ/E; an
    array broadcasting with them is allowed) is required, finite and > 0 for the extrinsic
    mechanism; for the intrinsic one, which does not depend on it, passing ``tau`` is an error.
    The extrinsic responses are Fermi-surface quantities and need ``temperature > 0`` (checked at
    run time, also under jit); the intrinsic ones accept T ≥ 0.

    ``metric_term`` (intrinsic orbital only): ``None`` (default) — the interband term of F_n alone,
    the one our open-boundary checks (flakes, ribbons; insulators and relaxation-time metals)
    verify; ``"fermi_sea"`` / ``"fermi_surface"`` add the quantum-metric-derivative term of seed
    eq. (10) as printed (∂g by autodiff, or integrated by parts onto f0'), for comparison with the
    wave-packet literature. Insulators: the metric term integrates to zero either way.

    Returns α with shape ``broadcast(mu, temperature[, tau]).shape + (3, 3)``; for 2D models the
    field components j = z vanish. Units: spin parts μ_B·e·L^{1−d}/E, orbital parts
    e²·L³/ħ per L^d (module docstring). One jit-compiled, differentiable pass over ``mesh``;
    changing the values of μ, T, τ, g or of the model's parameters does not recompile.
    """
    _validate(model, part, mechanism)
    require_x64()
    if mesh.dim != model.dim:
        raise ValueError(f"the mesh is {mesh.dim}D but {type(model).__name__} is {model.dim}D.")
    extrinsic = mechanism == "extrinsic"
    mu, temperature = as_mu_temperature(mu, temperature, fermi_surface=extrinsic)
    if extrinsic:
        scale = check_tau(tau, "mechanism='extrinsic'")
    else:
        if tau is not None:
            raise ValueError(
                "mechanism='intrinsic' does not depend on the relaxation time; do not pass tau "
                "(it is used only by mechanism='extrinsic')."
            )
        scale = jnp.ones(())
    if part == "spin":
        scale = -jnp.asarray(g_factor, dtype=jnp.float64) * scale
    if metric_term is not None and (part, mechanism) != ("orbital", "intrinsic"):
        raise ValueError("metric_term applies only to part='orbital', mechanism='intrinsic'.")
    return _kinetic(model, mesh, mu, temperature, scale, part, mechanism, degen_tol, chunk_size, metric_term)
