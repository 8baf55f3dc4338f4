r"""Second-order (E²) dc current: Berry-curvature dipole, nonlinear Drude, quantum-metric dipole.

The dc current to second order in a static uniform field, j^a = χ^{abc} E_b E_c with χ symmetric
in (b, c), in model units (ħ = e = k_B = 1, electron charge −e, field as the electron's potential
energy +e E·r). Three mechanisms, by their order in the relaxation time τ:

==========================  ==========================================================  =====
mechanism                    χ^{abc}                                                     order
==========================  ==========================================================  =====
``"drude"``                  −τ² Σ_n ∫ f0 ∂_a∂_b∂_c E_n                                  τ²
``"berry_curvature_dipole"`` (τ/2)(ε_{abd} D_{cd} + ε_{acd} D_{bd})                      τ
``"intrinsic"``              −Σ_n ∫ f0 [∂_a G_n^{bc} − ½(∂_b G_n^{ac} + ∂_c G_n^{ab})]   τ⁰
==========================  ==========================================================  =====

∫ = ∫ d^dk/(2π)^d (mesh weights), f0 = f0(E_n), ∂_a = ∂/∂k_a, Ω_n the Berry-curvature vector
(Ω^z = Ω^{xy}, :mod:`qgeo_jax._geometry`), and

.. math::
    D_{ab} = \sum_n\int f_0\,∂_a Ω_n^b = -\sum_n\int v_n^a Ω_n^b f_0'
    \quad\text{(Berry-curvature dipole)}

    G_n^{ab} = 2\,\mathrm{Re}\sum_{m≠n}\frac{\mathcal A^a_{nm}\mathcal A^b_{mn}}{E_n - E_m}
             = 2\,\mathrm{Re}\sum_{m≠n}\frac{v^a_{nm} v^b_{mn}}{(E_n - E_m)^3}
    \quad\text{(Berry-connection polarizability, band-normalised quantum metric)}

    Λ^{abc} = \sum_n\int f_0\,∂_a G_n^{bc} = -\sum_n\int v_n^a G_n^{bc} f_0'
    \quad\text{(quantum-metric dipole)}

with 𝒜_{nm} = i v_{nm}/(E_m − E_n) the interband Berry connection. Every dipole has a Fermi-sea
form (∂_k by forward-mode autodiff of the degeneracy-averaged band quantity, ``jax.jacfwd``,
weighted by f0; any T ≥ 0) and a Fermi-surface form (integrated by parts onto f0', T > 0); on a
periodic mesh, or a continuum disk whose rim lies in filled or empty states, they agree to
quadrature accuracy (tested).

Derivation in our conventions (Boltzmann, relaxation-time approximation)
------------------------------------------------------------------------
The force on an electron is −e E, so k̇ = −E and, with the anomalous velocity
(Xiao, Chang, Niu, RMP 82, 1959 (2010), doi:10.1103/RevModPhys.82.1959),

.. math:: \dot{\mathbf r} = \mathbf v_n - \dot{\mathbf k}\times\boldsymbol Ω_n
          = \mathbf v_n + \mathbf E\times\boldsymbol Ω_n,
          \qquad \mathbf j = -\sum_n\int \dot{\mathbf r}\, f_n .

The steady Boltzmann equation −E·∂_k f = −(f − f0)/τ is solved exactly by
f(k) = ∫_0^∞ (ds/τ) e^{−s/τ} f0(E_n(k + E s)) and order by order by
f = f0 + τ (E·∂_k) f0 + τ² (E·∂_k)² f0 + …, i.e. f1 = eτ (v·E) f0' (the package's convention) and
f2 = (eτ)²(E·∂_k)² f0. Collecting E²:

* −Σ∫ v^a f2 = −τ² E_b E_c Σ∫ v^a ∂_b∂_c f0 = −τ² E_b E_c Σ∫ f0 ∂_a∂_b∂_c E_n (by parts twice): the
  nonlinear Drude term (Fermi-surface form used here: (τ²/2) Σ∫ f0' (∂_b v^a v^c + ∂_c v^a v^b));
* −Σ∫ (E×Ω)^a f1 = −τ ε_{abd} E_b E_c Σ∫ Ω^d v^c f0' = τ ε_{abd} D_{cd} E_b E_c: the Berry-curvature
  dipole term, symmetrised in (b, c) above.

The intrinsic term (Gao, Yang, Niu, PRL 112, 166601 (2014), doi:10.1103/PhysRevLett.112.166601):
to first order in V = +E·r the band-n state mixes in |m⟩ E_b 𝒜^b_{mn}/(E_n − E_m), which shifts the
wave-packet centre (field-induced Berry connection) by 𝒜'_n = G_n E; the Berry curvature gains
Ω'_n = ∇_k × (G_n E), and the band energy a term −½ E·G_n·E. With the distribution relaxing to
f0(Ẽ_n) of the corrected energy, the energy terms form a total derivative ∂_a(Ẽ^{(2)} f0) and drop
out, and −Σ∫ (E×Ω')^a f0 = −Σ∫ f0 (∂_a G^{bc} − ∂_b G^{ac}) E_b E_c gives the τ⁰ row of the table
(Wang, Gao, Xiao, PRL 127, 277201 (2021), doi:10.1103/PhysRevLett.127.277201; Liu et al., PRL 127,
277202 (2021), doi:10.1103/PhysRevLett.127.277202). It is purely Hall: χ^{abc} E_a E_b E_c = 0
(no dissipation). Kaplan, Holder and Yan (PRL 132, 026301 (2024),
doi:10.1103/PhysRevLett.132.026301) report an additional non-Hall τ⁰ term ∝ Σ∫ f0 ∂_a G^{bc}
(nonreciprocal longitudinal response) from their treatment of the distribution function; later work
comparing perturbation theory, wave packets and the Luttinger–Kohn route (Qiang et al.,
arXiv:2508.02088 (2025)) finds the Hall form above. **We implement the Hall form of Wang–Gao–Xiao
and Liu et al.**; :func:`quantum_metric_dipole` returns Λ^{abc}, from which any other published
combination can be formed.

Relation to Sodemann & Fu (PRL 115, 216806 (2015), doi:10.1103/PhysRevLett.115.216806): they write
E(t) = Re{E e^{iωt}} and j = Re{j⁰ + j^{2ω} e^{2iωt}}, j⁰_a = χ^{SF}_{abc} E_b E_c^*, with
χ^{SF}_{abc} = −ε_{adc} e³ τ D_{bd}/(2(1 + iωτ)) and the same D (electron charge −e). A static real
field is their ω → 0 limit with j = j⁰ + j^{2ω}, so our dc χ^{abc} (symmetrised) equals
2 χ^{SF}_{(b,c)} at ω = 0: identical physics, a factor 2 from the Re{·} convention.

Verification (``tests/test_nonlinear_hall*.py``)
------------------------------------------------
* Tilted massive Dirac valley (continuum, T = 0.01): D and Λ vs a closed form exact in the tilt
  (Fermi-line flux by quadrature, thermal convolution), both valleys and mass signs, both routes:
  ≤ 2e-9 relative; first order in t: D_{az} = −3ξ m t_a (μ² − m²)/(8π μ⁴),
  χ_int^{abc} = −(1 − m²/μ²)/(8π μ²) [t_a δ_bc − ½(δ_ab t_c + δ_ac t_b)] (derived here).
* Brute-force RTA Boltzmann (exact constant-force solution, Hessian of j(E) by autodiff) =
  τ χ_BCD + τ² χ_Drude: 2D to 5e-8; 3D (all ε indices) τ¹ part to 1e-12, τ² part to mesh accuracy.
* Wave-packet route (field-corrected energy and Berry curvature, G from eigenvector derivatives)
  = χ_int to 5e-8; G_n vs a resolvent formula to 1e-9.
* Symmetry zeros (T: Λ = Drude = 0; P: all zero; PT: D = 0; C3: D = 0), insulators (Λ → 0),
  gauge invariance through Kramers pairs, Fermi sea = Fermi surface (exponential in the mesh),
  gradients (reverse and forward) vs central differences ≤ 1e-6.

Units and SI
------------
Model units: energies E, lengths L, d = model dimension; field in E/(e·L), τ in ħ/E. Ω is L², G is
L²/E, so D is L^{3−d} (a length in 2D) and Λ is L^{3−d}/E; χ for every mechanism is in
e³·L^{3−d}/(ħ·E), i.e. current density (e·E/ħ per L^{d−1}) per field². Multiply χ by
:func:`si_factor` to get A·m^{d−2}/V² (2D: A·m/V², j being a sheet current in A/m; 3D: A/V²).

Degeneracies: v_n, Ω_n and G_n are averaged over exactly degenerate sets (|E_n − E_m| <
``degen_tol``) before they are differentiated or weighted, so every output is gauge invariant (e.g.
Kramers pairs of PT-symmetric bands). Pairs inside a set are dropped from G_n (degenerate
perturbation theory: the field mixes them at zeroth order, which this clean-limit formula does not
describe; splittings ≪ ħ/τ behave as one set).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ._bz import DEFAULT_CHUNK, AbstractMesh, integrate
from ._geometry import degenerate_average
from ._kinetic import _fermi_derivative, _weighted_outer
from ._linalg import denominators
from ._occupation import fermi_dirac
from ._responses import _check_mesh, _curl_components, _to_vector, as_mu_temperature
from ._spectrum import DEFAULT_DEGEN_TOL, Spectrum, eigen_velocity
from ._validate import check_tau
from .models._base import AbstractModel

ROUTES = ("fermi_surface", "fermi_sea")
MECHANISMS = ("berry_curvature_dipole", "drude", "intrinsic")

# numpy, not jax: module constants must not become tracers if this module is imported in a trace.
_EPS = np.zeros((3, 3, 3))
for _i, _j, _k in ((0, 1, 2), (1, 2, 0), (2, 0, 1)):
    _EPS[_i, _j, _k], _EPS[_i, _k, _j] = 1.0, -1.0

_E_CHARGE = 1.602176634e-19  # C (exact, SI 2019)
_HBAR = 6.62607015e-34 / (2 * np.pi)  # J s


def si_factor(dim: int, *, length_m: float = 1e-10, energy_j: float = _E_CHARGE) -> float:
    r"""Multiply χ (model units e³·L^{3−d}/(ħ·E)) by this to get SI, A·m^{d−2}/V².

    ``length_m``: the model's length unit in metres (default 1 Å); ``energy_j``: its energy unit in
    joules (default 1 eV). e³ L^{3−d}/(ħ E) = (e²/ħ)(e/E)·L^{3−d}; for E = 1 eV, e/E = 1/V.
    """
    if dim not in (1, 2, 3):
        raise ValueError(f"dim must be 1, 2 or 3, got {dim!r}.")
    return _E_CHARGE**3 * length_m ** (3 - dim) / (_HBAR * energy_j)


# --------------------------------------------------------------------------------------------------
# band-resolved kernels
# --------------------------------------------------------------------------------------------------
def _polarizability(energies, velocity, degen_tol):
    """Raw G_n^{ab} [n, a, b] from velocity matrices with any number of Cartesian components."""
    inv1, inv2, _ = denominators(energies, degen_tol)  # [n, m] = 1/(E_n − E_m), its square
    prod = velocity[:, None, :, :] * jnp.swapaxes(velocity, -1, -2)[None, :, :, :]  # v^a_nm v^b_mn
    return 2.0 * jnp.einsum("abnm,nm->nab", jnp.real(prod), inv1 * inv2)


def berry_connection_polarizability(
    spec: Spectrum, *, degen_tol: float = DEFAULT_DEGEN_TOL, average_degenerate: bool = True
) -> Float[Array, "n 3 3"]:
    r"""Berry-connection polarizability (band-normalised quantum metric) G_n^{ab}, [n, a, b]:

    .. math:: G_n^{ab} = 2\,\mathrm{Re}\sum_{m≠n}
              \frac{\mathcal A^a_{nm}\mathcal A^b_{mn}}{E_n - E_m}
              = 2\,\mathrm{Re}\sum_{m≠n}\frac{v^a_{nm}v^b_{mn}}{(E_n - E_m)^3}

    (Gao, Yang, Niu, PRL 112, 166601 (2014), doi:10.1103/PhysRevLett.112.166601). For the potential
    +e E·r the wave-packet centre of band n shifts by G_n E (e = 1): G < 0 for the lowest band.
    Symmetric in (a, b); two bands: G_± = ±2g/(E_+ − E_−) with g the quantum metric. Pairs with
    |E_n − E_m| < ``degen_tol`` are dropped; ``average_degenerate`` averages over degenerate sets.
    Units: length²/energy.
    """
    _, _, degenerate = denominators(spec.energies, degen_tol)
    g = _polarizability(spec.energies, spec.velocity, degen_tol)
    return degenerate_average(g, degenerate) if average_degenerate else g


def _pad(x, axes, dim):
    """Zero-pad each of ``axes`` from ``dim`` to 3 entries (2D models live in 3D for outputs)."""
    if dim == 3:
        return x
    pad = [(0, 0)] * x.ndim
    for axis in axes:
        pad[axis] = (0, 3 - dim)
    return jnp.pad(x, pad)


def _band_fields(model, k, degen_tol, want):
    """Degeneracy-averaged band quantities at one k, from one eigh.

    ``want`` ⊂ {"v", "omega", "g"}. Returns (energies, dict): v (n, dim), Ω (n, 3) and G
    (n, dim, dim) — Cartesian components beyond the model's dimension are left out (they vanish)
    and padded only after the k reduction, which keeps the per-k products small in 2D.
    """
    energies, _, v = eigen_velocity(model, k, degen_tol=degen_tol)
    _, inv2, degenerate = denominators(energies, degen_tol)
    avg = lambda x: degenerate_average(x, degenerate)
    out = {}
    if "v" in want:
        out["v"] = avg(jnp.real(jnp.diagonal(v, axis1=-2, axis2=-1)).T)
    if "omega" in want:
        im, comps = _curl_components(v)
        out["omega"] = avg(_to_vector(-2.0 * jnp.einsum("cnm,nm->nc", im, inv2), comps))
    if "g" in want:
        out["g"] = avg(_polarizability(energies, v, degen_tol))
    return energies, out


def _k_derivative(model, k, degen_tol, want):
    """(energies, fields, ∂_a fields) with the derivative index a (length dim) right after the band
    axis: a field of shape (n, ...) gets a derivative of shape (n, dim, ...). One forward-mode pass
    (``jax.jacfwd`` in k through the degeneracy-safe eigh).
    """
    k = jnp.asarray(k, dtype=jnp.float64)

    def fields(q):
        energies, out = _band_fields(model, q, degen_tol, want)
        return out, (energies, out)

    d, (energies, out) = jax.jacfwd(fields, has_aux=True)(k)
    return energies, out, {key: jnp.moveaxis(val, -1, 1) for key, val in d.items()}


# --------------------------------------------------------------------------------------------------
# per-k integrands (no τ, no mesh weight); mu, temperature broadcast to one shape; tensor axes of
# length dim except the Ω axis of the BCD (3); _reduce pads them to 3.
# --------------------------------------------------------------------------------------------------
def _flat(x):
    return x.reshape(x.shape[0], -1)


def _bcd_integrand(model, k, mu, temperature, degen_tol, route):
    """D_{ab}: Fermi sea Σ f0 ∂_a Ω^b, or Fermi surface −Σ f0' v^a Ω^b. Shape (..., dim, 3)."""
    dim = model.dim
    if route == "fermi_sea":
        energies, _, d = _k_derivative(model, k, degen_tol, ("omega",))
        f = fermi_dirac(energies, mu[..., None], temperature[..., None])
        return (f @ _flat(d["omega"])).reshape(f.shape[:-1] + (dim, 3))
    energies, out = _band_fields(model, k, degen_tol, ("v", "omega"))
    df = _fermi_derivative(energies, mu[..., None], temperature[..., None])
    return -_weighted_outer(df, out["v"], out["omega"])


def _qmd_integrand(model, k, mu, temperature, degen_tol, route):
    """Λ^{abc}: Fermi sea Σ f0 ∂_a G^{bc}, or Fermi surface −Σ f0' v^a G^{bc}; (..., d, d, d)."""
    shape = (model.dim,) * 3
    if route == "fermi_sea":
        energies, _, d = _k_derivative(model, k, degen_tol, ("g",))
        f = fermi_dirac(energies, mu[..., None], temperature[..., None])
        return (f @ _flat(d["g"])).reshape(f.shape[:-1] + shape)
    energies, out = _band_fields(model, k, degen_tol, ("v", "g"))
    df = _fermi_derivative(energies, mu[..., None], temperature[..., None])
    return -_weighted_outer(df, out["v"], _flat(out["g"])).reshape(df.shape[:-1] + shape)


def _drude_integrand(model, k, mu, temperature, degen_tol, route):
    """χ_Drude/τ²: Fermi sea −Σ f0 ∂_a∂_b∂_c E_n, or surface ½Σ f0'(∂_b v^a v^c + ∂_c v^a v^b)."""
    shape = (model.dim,) * 3
    if route == "fermi_sea":
        k = jnp.asarray(k, dtype=jnp.float64)

        def inverse_mass(q):  # M[n, a, b] = ∂_b v_n^a, with the energies as aux
            energies, _, d = _k_derivative(model, q, degen_tol, ("v",))
            return jnp.swapaxes(d["v"], 1, 2), energies

        dm, energies = jax.jacfwd(inverse_mass, has_aux=True)(k)  # [n, a, b, c] = ∂_c∂_b v^a
        f = fermi_dirac(energies, mu[..., None], temperature[..., None])
        return -(f @ _flat(dm)).reshape(f.shape[:-1] + shape)
    energies, out, d = _k_derivative(model, k, degen_tol, ("v",))
    df = _fermi_derivative(energies, mu[..., None], temperature[..., None])
    mass = jnp.swapaxes(d["v"], 1, 2)  # [n, a, b] = ∂_b v^a
    t = _weighted_outer(df, _flat(mass), out["v"]).reshape(df.shape[:-1] + shape)
    return 0.5 * (t + jnp.swapaxes(t, -1, -2))


_INTEGRANDS = {"bcd": _bcd_integrand, "qmd": _qmd_integrand, "drude": _drude_integrand}


@eqx.filter_jit
def _reduce(model, mesh, mu, temperature, kind, route, degen_tol, chunk_size):
    fn = _INTEGRANDS[kind]
    per_k = lambda k: fn(model, k, mu, temperature, degen_tol, route)
    total = integrate(per_k, mesh, chunk_size=chunk_size)
    axes = (-2,) if kind == "bcd" else (-3, -2, -1)
    return _pad(total, tuple(total.ndim + a for a in axes), model.dim)


def _prepare(model, mesh, mu, temperature, route):
    if route not in ROUTES:
        raise ValueError(f"unknown route={route!r}; use one of {ROUTES}.")
    model = _check_mesh(model, mesh)
    mu, temperature = as_mu_temperature(mu, temperature, fermi_surface=route == "fermi_surface")
    return model, mu, temperature


# --------------------------------------------------------------------------------------------------
# public Brillouin-zone quantities
# --------------------------------------------------------------------------------------------------
def berry_curvature_dipole(
    model: AbstractModel,
    mesh: AbstractMesh,
    *,
    mu,
    temperature=0.0,
    route: str = "fermi_surface",
    degen_tol: float = DEFAULT_DEGEN_TOL,
    chunk_size: int = DEFAULT_CHUNK,
) -> Float[Array, "... 3 3"]:
    r"""Berry-curvature dipole D_{ab} (Sodemann & Fu, PRL 115, 216806 (2015),
    doi:10.1103/PhysRevLett.115.216806), indexed [..., a, b]:

    .. math:: D_{ab} = \sum_n\int\!\frac{d^dk}{(2π)^d} f_0(E_n)\,∂_a Ω_n^b
              = -\sum_n\int\!\frac{d^dk}{(2π)^d} v_n^a Ω_n^b f_0'(E_n)

    ``route="fermi_sea"``: ∂_a Ω_n by forward-mode autodiff in k (any T ≥ 0);
    ``route="fermi_surface"`` (default): the second form, T > 0. Ω^b is the Berry-curvature vector
    (Ω^z = Ω^{xy}); for 2D models only D_{xz}, D_{yz} can be non-zero. Units length^{3−d} (a length
    in 2D). Output shape broadcast(mu, temperature) + (3, 3). Time-reversal even,
    inversion odd; the current it drives is :func:`nonlinear_hall_conductivity`.
    """
    model, mu, temperature = _prepare(model, mesh, mu, temperature, route)
    return _reduce(model, mesh, mu, temperature, "bcd", route, degen_tol, chunk_size)


def quantum_metric_dipole(
    model: AbstractModel,
    mesh: AbstractMesh,
    *,
    mu,
    temperature=0.0,
    route: str = "fermi_surface",
    degen_tol: float = DEFAULT_DEGEN_TOL,
    chunk_size: int = DEFAULT_CHUNK,
) -> Float[Array, "... 3 3 3"]:
    r"""Dipole of the band-normalised quantum metric (BCP) [..., a, b, c]

    .. math:: Λ^{abc} = \sum_n\int\!\frac{d^dk}{(2π)^d} f_0(E_n)\,∂_a G_n^{bc}
              = -\sum_n\int\!\frac{d^dk}{(2π)^d} v_n^a G_n^{bc} f_0'(E_n)

    with G_n of :func:`berry_connection_polarizability` (Gao, Yang, Niu 2014; Wang, Gao, Xiao,
    PRL 127, 277201 (2021); Liu et al., PRL 127, 277202 (2021); Gao et al., Science 381, 181
    (2023), doi:10.1126/science.adf1506). Routes as in :func:`berry_curvature_dipole`. Symmetric in
    (b, c); odd under time reversal and under inversion (non-zero needs both broken, e.g. PT
    magnets); zero in insulators (a total derivative over filled bands). Units
    length^{3−d}/energy. The intrinsic conductivity is χ^{abc} = −[Λ^{abc} − ½(Λ^{bac} + Λ^{cab})].
    """
    model, mu, temperature = _prepare(model, mesh, mu, temperature, route)
    return _reduce(model, mesh, mu, temperature, "qmd", route, degen_tol, chunk_size)


def bcd_conductivity(dipole: Float[Array, "... 3 3"], tau) -> Float[Array, "... 3 3 3"]:
    """χ^{abc} = (τ/2)(ε_{abd} D_{cd} + ε_{acd} D_{bd}) from a Berry-curvature dipole D."""
    t = jnp.einsum("abd,...cd->...abc", _EPS, dipole)
    return 0.5 * jnp.asarray(tau)[..., None, None, None] * (t + jnp.swapaxes(t, -1, -2))


def intrinsic_conductivity(qmd: Float[Array, "... 3 3 3"]) -> Float[Array, "... 3 3 3"]:
    """χ^{abc} = −[Λ^{abc} − ½(Λ^{bac} + Λ^{cab})] from a quantum-metric dipole Λ (module doc)."""
    return -(qmd - 0.5 * (jnp.swapaxes(qmd, -3, -2) + jnp.moveaxis(qmd, -3, -1)))


def nonlinear_hall_conductivity(
    model: AbstractModel,
    mesh: AbstractMesh,
    *,
    mu,
    temperature=0.0,
    tau=None,
    mechanism: str = "berry_curvature_dipole",
    route: str = "fermi_surface",
    degen_tol: float = DEFAULT_DEGEN_TOL,
    chunk_size: int = DEFAULT_CHUNK,
) -> Float[Array, "... 3 3 3"]:
    r"""Second-order dc conductivity χ^{abc}, j^a = χ^{abc} E_b E_c (sym. in b, c), [..., a, b, c].

    * ``"berry_curvature_dipole"`` (τ-linear; Sodemann & Fu 2015):
      χ^{abc} = (τ/2)(ε_{abd} D_{cd} + ε_{acd} D_{bd}), D from :func:`berry_curvature_dipole`;
    * ``"drude"`` (τ², nonlinear Drude): χ^{abc} = −τ² Σ∫ f0 ∂_a∂_b∂_c E_n
      (Fermi surface: (τ²/2) Σ∫ f0' (∂_b v^a v^c + ∂_c v^a v^b));
    * ``"intrinsic"`` (τ⁰; Gao–Yang–Niu 2014, Wang–Gao–Xiao 2021, Liu et al. 2021):
      χ^{abc} = −Σ∫ f0 [∂_a G^{bc} − ½(∂_b G^{ac} + ∂_c G^{ab})], a pure Hall response
      (χ^{abc} E_a E_b E_c = 0). Kaplan–Holder–Yan's extra non-Hall term is not included (module
      docstring).

    Conventions: electron charge −e, field as potential energy +e E·r, f1 = eτ(v·E) f0',
    f2 = (eτ)²(E·∂_k)² f0 (derivation in the module docstring). ``tau`` (units ħ/energy,
    broadcasting with μ and T) is required, finite and > 0 for the τ mechanisms and must not be
    given for ``"intrinsic"``. ``route`` selects the Fermi-surface (T > 0) or Fermi-sea (autodiff
    in k, T ≥ 0) form. The total semiclassical dc current to E² is the sum of the three.
    Units: e³·L^{3−d}/(ħ·E); :func:`si_factor` converts to A·m^{d−2}/V². Differentiable in the
    model's parameters, μ, T and τ; one jit-compiled pass over ``mesh``.
    """
    if mechanism not in MECHANISMS:
        raise ValueError(f"unknown mechanism={mechanism!r}; use one of {MECHANISMS}.")
    model, mu, temperature = _prepare(model, mesh, mu, temperature, route)
    if mechanism == "intrinsic":
        if tau is not None:
            raise ValueError(
                "mechanism='intrinsic' does not depend on the relaxation time; do not pass tau "
                "(it is used only by 'berry_curvature_dipole' and 'drude')."
            )
        qmd = _reduce(model, mesh, mu, temperature, "qmd", route, degen_tol, chunk_size)
        return intrinsic_conductivity(qmd)
    tau = check_tau(tau, f"mechanism={mechanism!r}")
    tau = jnp.broadcast_to(tau, jnp.broadcast_shapes(tau.shape, mu.shape))
    if mechanism == "berry_curvature_dipole":
        dipole = _reduce(model, mesh, mu, temperature, "bcd", route, degen_tol, chunk_size)
        return bcd_conductivity(dipole, tau)
    drude = _reduce(model, mesh, mu, temperature, "drude", route, degen_tol, chunk_size)
    return (tau * tau)[..., None, None, None] * drude
