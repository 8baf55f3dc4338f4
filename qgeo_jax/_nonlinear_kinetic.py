r"""Second-order (E²) kinetic magnetization δM^i = χ^{ijk} E_j E_k: spin and orbital parts.

The seed's outlook (section IV) names the nonlinear kinetic magnetization as open; this module
gives its three relaxation-time orders in one conventions set (ħ = e = k_B = 1, electron charge
−e, the field as potential energy +e E·r, relaxation-time approximation (RTA)). χ is symmetric in
(j, k); 2D models have zero entries for j or k = z.

Band observable and its field corrections
-----------------------------------------
X_n is the band-resolved observable whose Fermi-sea sum is the magnetization: X = −g⟨S⟩_n for
the spin part (M^S = −g μ_B Σ∫⟨S⟩ f, S = σ/2) and X = m_n (orbital moment, the same observable as
the linear orbital Edelstein term of :mod:`qgeo_jax._kinetic`). To first order in E the Bloch
state of band n acquires |δn⟩ = Σ_{m≠n}|m⟩ eE·𝒜_{mn}/(E_n − E_m), which corrects X by
δX_n = e Y_n^{ij} E_j with Y = −gΦ_n (spin Berry curvature, Garate & Franz) or Y = F_n (the
magnetoelectric tensor of :mod:`qgeo_jax._magnetoelectric`, corrected seed eq. 10).

Distribution (RTA, constant force −eE): f = Σ_N (eτ E·∂_k)^N f0 — exactly
f_n(k) = ∫_0^∞ ds/τ e^{−s/τ} f0(E_n(k + eEs)); f1 = eτ(v·E)f0', f2 = (eτ)² E_jE_k ∂_j∂_k f0.

==========  ==================================================================  ==========
mechanism    χ^{ijk} (symmetrised in j, k)                                        symmetry
==========  ==================================================================  ==========
extrinsic    τ² Σ_n∫ X_n^i ∂_j∂_k f0 = τ² Σ_n∫ f0 ∂_j∂_k X_n^i                     T-odd
             = −τ² Σ_n∫ ∂_j X_n^i v_n^k f0'                                       P-even
tau_linear   τ Σ_n∫ Y_n^{ij} v_n^k f0' = −τ Σ_n∫ f0 ∂_k Y_n^{ij}                  T-even
intrinsic    spin: Σ_n∫ [f0 X_n^{(2)ijk} − ½ f0' G_n^{jk} X_n^i]                 T-odd
             orbital (insulators, T = 0): ½ ∂α_{jk}/∂B_i (Maxwell relation)
==========  ==================================================================  ==========

* **extrinsic** (τ²): the observable carried by the second-order Boltzmann distribution
  f2 (Fermi-surface route by one integration by parts, Fermi-sea route by two; ∂ by forward-mode
  autodiff in k of the degeneracy-averaged X_n). Spin: the "nonlinear Drude spin magnetization"
  (L. Xiang, H. Jin, J. Wang, arXiv:2406.02257); orbital: its m_n counterpart (derived here).
* **tau_linear** (τ¹): the first-order field correction δX_n = eY_n·E carried by f1 — the
  momentum-space dipole of the anomalous spin polarizability (C. Xiao, W. Wu, H. Wang, …,
  S. A. Yang, PRL 130, 166302 (2023), doi:10.1103/PhysRevLett.130.166302, "time-reversal-even
  nonlinear current induced spin polarization"); the orbital counterpart with Y = F_n is derived
  here the same way. Included: δX^{(1)}·f1 only. A first-order correction of the band energy
  does not exist for a uniform field (the Stark shift eE·r_c is absorbed in the wave-packet
  centre), so f1 is unchanged. The band-basis density-matrix RTA (diagonal relaxation,
  clean-limit coherences) gives the same (derived, not coded separately): its τ¹ diagonal term is
  ∝ Im(𝒜^j_{nm}𝒜^k_{mn}) and vanishes once symmetrised in (j, k), and its τ¹ coherence term is
  exactly δX^{(1)}·f1.
* **intrinsic** (τ⁰, spin): the spin of the field-dressed band to second order plus the
  Fermi-surface shift of the occupation by the second-order band-energy correction, following the
  semiclassical theory of C. Xiao, H. Liu, W. Wu, H. Wang, Q. Niu, S. A. Yang, PRL 129, 086602
  (2022), doi:10.1103/PhysRevLett.129.086602. Our formulation (derived here): the projector P_n(E)
  onto band n's (degenerate) set in the field solves [H + eE·r, P_n] = 0 order by order, with
  [r_a, ·] = i∂_a in the Bloch (positions-convention) representation, so that in the band basis

  .. math::
      (P_n^{(1)})_{lm} = \frac{-i e E_a (\partial_a P_n)_{lm}}{E_l - E_m},\qquad
      (P_n^{(2)})_{lm} = \frac{-i e E_b (\partial_b P_n^{(1)})_{lm}}{E_l - E_m}

  on the blocks that couple the set to the other bands, and P P^{(2)} P = −P (P^{(1)})² P,
  Q P^{(2)} Q = Q (P^{(1)})² Q on the diagonal blocks (idempotency). X_n^{(2)} = Tr[S P_n^{(2)}]
  (×−g). The band energy in the field is ε̃_n = E_n − ½e² G_n^{jk}E_jE_k (Gao, Yang, Niu,
  PRL 112, 166601 (2014); band energy relative to the potential at the shifted centre) with the
  Berry-connection polarizability G_n^{jk} = 2 Re Σ_{m≠n} 𝒜^j_{nm}𝒜^k_{mn}/(E_n − E_m), which
  gives the f0' term. In an insulator only Σ_occ Tr[S P^{(2)}] remains: the exact second-order
  ground-state spin. Verified (tests) against (i) the Hellmann–Feynman route
  δ⟨S_i⟩ = ∂_{h_i}[½ Σ_occ∫ G^{jk}] E_jE_k (H → H + h·S; the second-order Stark energy of the
  filled bands is ½Σ_occ∫G E E), to 1e-16 on converged meshes, and (ii) open flakes with
  +eE·r (exact second derivative in E by autodiff and by flake perturbation theory, extrapolated
  in size: 7e-13). The f0' term (metals only) uses the Gao–Yang–Niu band energy; we could not
  read the paper's own equations (only its abstract was accessible) and have no independent
  check of this term: with the Stark energy +½e²G (energy relative to the unshifted centre) it
  would change sign.
* **intrinsic** (τ⁰, orbital): for band insulators at T = 0 (μ in a gap), derived here in
  :mod:`qgeo_jax._nonlinear_orbital` from the Maxwell relation χ^{ijk} = ½ ∂α_{jk}/∂B_i (α the
  static electronic polarizability per volume) with the magnetic field to first order by the
  magnetic Moyal product in k-space; verified against open flakes with +eE·r (trivial insulator,
  extrapolated in size: 1.5e-7) and magnetic supercells with Peierls phases (Chern insulator,
  fitted in B: 4e-5). The metallic τ⁰ orbital term (its Fermi-surface parts) is not derived;
  metals raise an error.

Symmetry (tested): under time reversal τ → −τ and X is T-odd, so τ⁰ and τ² terms need broken T,
the τ¹ term survives in nonmagnetic crystals; all three are P-even (X even, EE even) and survive
in centrosymmetric crystals where every linear kinetic response vanishes. Under PT the τ⁰ and τ²
terms of the uniform magnetization vanish (PT-odd), the τ¹ term survives.

Units (E = energy unit, L = length unit, d = dimension, field in E/(e·L), τ in ħ/E): spin parts
μ_B·e²·L^{2−d}/E² (δM in μ_B per L^d); orbital parts in (e·E·L²/ħ per L^d) per field² unit.

Degeneracies: X_n, Y_n, G_n and Tr[S P_n^{(2)}] are averaged over exactly degenerate sets
(|E_n − E_m| < ``degen_tol``), so χ is gauge invariant (Kramers pairs). The per-set projectors
assume each set stays isolated where it is occupied with weight differing from its neighbours
(band crossings on the Fermi surface make the intrinsic term singular there, as in the papers).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._bz import DEFAULT_CHUNK, AbstractMesh, integrate
from ._config import require_x64
from ._geometry import degenerate_average
from ._kinetic import _fermi_derivative, spin_berry_curvature
from ._linalg import denominators, eigh
from ._magnetoelectric import magnetoelectric_interband
from ._nonlinear_hall import _polarizability
from ._nonlinear_orbital import chi_integrand as orbital_chi_integrand
from ._nonlinear_orbital import intrinsic_orbital_chi
from ._occupation import fermi_dirac
from ._responses import as_mu_temperature, curl_products
from ._spectrum import DEFAULT_DEGEN_TOL, hamiltonian_and_gradient, spectrum
from ._validate import check_tau
from .models._base import AbstractModel

PARTS = ("spin", "orbital")
MECHANISMS = ("extrinsic", "tau_linear", "intrinsic")
ROUTES = ("fermi_surface", "fermi_sea")


# --- band-resolved quantities as functions of k (for forward-mode k-derivatives) ------------------
def _pad(x: Array, axis: int, dim: int) -> Array:
    """Zero-pad a derivative axis from ``dim`` to 3 entries (2D models live in 3D)."""
    if dim == 3:
        return x
    pad = [(0, 0)] * x.ndim
    pad[axis] = (0, 3 - dim)
    return jnp.pad(x, pad)


def band_observable(model: AbstractModel, k, *, part: str, degen_tol: float = DEFAULT_DEGEN_TOL):
    r"""(X_n (n, 3), (E_n (n,), v_n (n, 3))) at one k: X = ⟨S⟩_n (spin) or m_n (orbital).

    Averaged over exactly degenerate sets. The g-factor is not included (⟨S⟩ in units of ħ).
    """
    if part == "spin":
        h, dh = hamiltonian_and_gradient(model, k)
        energies, u = eigh(h, degen_tol)
        _, _, degenerate = denominators(energies, degen_tol)
        s = jnp.asarray(model.spin_operators(), dtype=u.dtype)
        rot = lambda op: jnp.real(jnp.einsum("in,aij,jn->na", jnp.conj(u), op, u))
        x, vel = rot(s), rot(dh)
    else:
        spec = spectrum(model, k, degen_tol=degen_tol)
        energies = spec.energies
        inv1, _, degenerate = denominators(energies, degen_tol)
        x = -jnp.einsum("cnm,nm->nc", curl_products(spec.velocity, spec.velocity), inv1)
        vel = jnp.real(jnp.diagonal(spec.velocity, axis1=-2, axis2=-1)).T
    avg = lambda a: degenerate_average(a, degenerate)
    return avg(x), (energies, avg(vel))


def first_order_kernel(model: AbstractModel, k, *, part: str, degen_tol: float = DEFAULT_DEGEN_TOL):
    r"""(Y_n^{ij} (n, 3, 3), (E_n, v_n)): δX_n^i = e Y_n^{ij} E_j to first order in E.

    Y = Φ_n (spin Berry curvature, g not included) or F_n (magnetoelectric tensor without the
    metric term); averaged over degenerate sets.
    """
    spec = spectrum(model, k, degen_tol=degen_tol)
    _, _, degenerate = denominators(spec.energies, degen_tol)
    if part == "spin":
        y = spin_berry_curvature(spec, degen_tol=degen_tol)
    else:
        y = magnetoelectric_interband(spec, degen_tol=degen_tol)
    vel = jnp.real(jnp.diagonal(spec.velocity, axis1=-2, axis2=-1)).T
    avg = lambda a: degenerate_average(a, degenerate)
    return avg(y), (spec.energies, avg(vel))


def berry_connection_polarizability(spec, *, degen_tol: float = DEFAULT_DEGEN_TOL):
    r"""G_n^{jk} = 2 Re Σ_{m≠n} v^j_{nm} v^k_{mn}/(E_n − E_m)³ = 2Re Σ 𝒜^j_{nm}𝒜^k_{mn}/(E_n − E_m).

    Gao, Yang, Niu, PRL 112, 166601 (2014), doi:10.1103/PhysRevLett.112.166601. Second-order
    Stark energy of band n: ½ e² G_n^{jk} E_j E_k. Raw (not averaged). Units length³/energy·e.
    """
    return _polarizability(spec.energies, spec.velocity, degen_tol)


def _set_projectors(model, q, degen_tol):
    """P_n = projector onto band n's degenerate set, for every n: (n, N, N); aux (E, U, mask)."""
    h, _ = hamiltonian_and_gradient(model, q, pad=False)
    energies, u = eigh(h, degen_tol)
    _, _, degenerate = denominators(energies, degen_tol)
    d = degenerate.astype(u.dtype)
    proj = jnp.einsum("il,nl,jl->nij", u, d, jnp.conj(u))
    return proj, (energies, u, degenerate)


def _off_block(degenerate):
    """M[n, l, m] = 1 where exactly one of l, m is in band n's set (the blocks P·Q and Q·P)."""
    return degenerate[:, :, None] != degenerate[:, None, :]


def _first_order_projectors(model, q, degen_tol):
    """P_n^{(1)a} in the orbital basis, (n, dim_a, N, N), per unit eE_a.

    Aux: (E, U, degenerate mask, P^{(1)} in the band basis).
    """
    dproj, (energies, u, degenerate) = jax.jacfwd(
        lambda p: _set_projectors(model, p, degen_tol), has_aux=True
    )(q)  # (n, N, N, dim)
    inv1, _, _ = denominators(energies, degen_tol)
    uh = jnp.conj(u.T)
    band = jnp.einsum("li,nija,jm->nalm", uh, dproj, u)  # U† ∂_a P_n U
    weight = (inv1[None] * _off_block(degenerate)).astype(band.dtype)  # 1/(E_l − E_m) on P·Q, Q·P
    p1_band = -1j * band * weight[:, None]
    p1 = jnp.einsum("il,nalm,jm->naij", u, p1_band, jnp.conj(u))
    return p1, (energies, u, degenerate, p1_band)


def second_order_spin(model: AbstractModel, k, *, degen_tol: float = DEFAULT_DEGEN_TOL):
    r"""Band-resolved second-order spin T_n^{ijk} = Re Tr[S^i P_n^{(2)jk}] (per unit e²E_jE_k), and
    the first-order one Re Tr[S^i P_n^{(1)j}] (= Φ_n^{ij}), and (E_n, ⟨S⟩_n, G_n).

    Derived here (module docstring): P_n(E) solves [H + eE·r, P_n] = 0 order by order. Returns
    ``(T (n, 3, 3, 3), first (n, 3, 3), energies (n,), spin (n, 3), G (n, 3, 3))``, all averaged
    over degenerate sets, derivative/field axes zero-padded to 3.
    """
    k = jnp.asarray(k, dtype=jnp.float64)
    dim = model.dim
    dp1, (energies, u, degenerate, p1_band) = jax.jacfwd(
        lambda q: _first_order_projectors(model, q, degen_tol), has_aux=True
    )(k)  # (n, dim_a, N, N, dim_b)
    inv1, _, _ = denominators(energies, degen_tol)
    uh = jnp.conj(u.T)
    c = jnp.einsum("li,naijb,jm->nablm", uh, dp1, u)
    weight = (inv1[None] * _off_block(degenerate)).astype(c.dtype)
    p2_off = -1j * c * weight[:, None, None]
    # diagonal blocks from idempotency: P P2 P = −P P1 P1 P, Q P2 Q = +Q P1 P1 Q (P1 P1 has no
    # off-block part because P1 itself is purely off-block).
    sq = jnp.einsum("nalr,nbrm->nablm", p1_band, p1_band)
    d = degenerate.astype(sq.real.dtype)
    sign = jnp.where(degenerate, -1.0, 1.0)  # −1 on the set's block, +1 on the rest
    same = d[:, :, None] * d[:, None, :] + (1 - d)[:, :, None] * (1 - d)[:, None, :]
    p2 = p2_off + (sign[:, :, None] * same)[:, None, None] * sq
    p2 = 0.5 * (p2 + jnp.swapaxes(p2, 1, 2))
    s = jnp.asarray(model.spin_operators(), dtype=u.dtype)
    s_band = jnp.einsum("li,cij,jm->clm", uh, s, u)  # S_{lm}; Tr[S P] = Σ S_{ml} P_{lm}
    t = jnp.real(jnp.einsum("cml,nablm->ncab", s_band, p2))
    first = jnp.real(jnp.einsum("cml,nalm->nca", s_band, p1_band))
    spin = jnp.real(jnp.einsum("cmm->mc", s_band))
    spec = spectrum(model, k, degen_tol=degen_tol)
    g = berry_connection_polarizability(spec, degen_tol=degen_tol)
    avg = lambda a: degenerate_average(a, degenerate)
    t = _pad(_pad(avg(t), 2, dim), 3, dim)
    first = _pad(avg(first), 2, dim)
    return t, first, energies, avg(spin), avg(g)


# --- per-k integrands (without τ powers and g) ---------------------------------------------
def _sym(x):
    return 0.5 * (x + jnp.swapaxes(x, -1, -2))


def _extrinsic(model, k, mu, temperature, part, route, degen_tol):
    dim = model.dim
    xfn = lambda q: band_observable(model, q, part=part, degen_tol=degen_tol)
    if route == "fermi_sea":
        d1 = lambda q: jax.jacfwd(xfn, has_aux=True)(q)
        d2, (energies, _) = jax.jacfwd(d1, has_aux=True)(k)  # (n, 3, dim, dim)
        d2 = _pad(_pad(d2, 2, dim), 3, dim)
        f = fermi_dirac(energies, mu[..., None], temperature[..., None])
        return jnp.einsum("...n,nijk->...ijk", f, d2)
    dx, (energies, vel) = jax.jacfwd(xfn, has_aux=True)(k)  # (n, 3, dim)
    dx = _pad(dx, 2, dim)
    df = _fermi_derivative(energies, mu[..., None], temperature[..., None])
    return -_sym(jnp.einsum("...n,nij,nk->...ijk", df, dx, vel))


def _tau_linear(model, k, mu, temperature, part, route, degen_tol):
    dim = model.dim
    yfn = lambda q: first_order_kernel(model, q, part=part, degen_tol=degen_tol)
    if route == "fermi_sea":
        dy, (energies, _) = jax.jacfwd(yfn, has_aux=True)(k)  # (n, 3, 3, dim)
        dy = _pad(dy, 3, dim)
        f = fermi_dirac(energies, mu[..., None], temperature[..., None])
        return -_sym(jnp.einsum("...n,nijk->...ijk", f, dy))
    y, (energies, vel) = yfn(k)
    df = _fermi_derivative(energies, mu[..., None], temperature[..., None])
    return _sym(jnp.einsum("...n,nij,nk->...ijk", df, y, vel))


def _intrinsic(model, k, mu, temperature, part, route, degen_tol):
    t, _, energies, spin, g = second_order_spin(model, k, degen_tol=degen_tol)
    f = fermi_dirac(energies, mu[..., None], temperature[..., None])
    df = _fermi_derivative(energies, mu[..., None], temperature[..., None])
    sea = jnp.einsum("...n,nijk->...ijk", f, t)
    surface = -0.5 * jnp.einsum("...n,ni,njk->...ijk", df, spin, g)
    return sea + surface


_INTEGRANDS = {"extrinsic": _extrinsic, "tau_linear": _tau_linear, "intrinsic": _intrinsic}


def nonlinear_kinetic_integrand(
    model: AbstractModel,
    k: Float[Array, " dim"],
    *,
    mu,
    temperature,
    part: str,
    mechanism: str,
    route: str = "fermi_surface",
    g_factor=2.0,
    degen_tol: float = DEFAULT_DEGEN_TOL,
) -> Float[Array, "... 3 3 3"]:
    """k-resolved density of :func:`nonlinear_kinetic_magnetization` per unit τ^p (p = 2, 1, 0).

    Includes −g for the spin part; no validation of T or τ. Output broadcast(mu, T) + (3, 3, 3).
    The orbital τ⁰ density is the zero-temperature insulator one (states below μ filled, T not
    used); it is k-local only up to total derivatives, so only its sum over the whole periodic zone
    is physical.
    """
    _validate(model, part, mechanism, route)
    mu, temperature = jnp.broadcast_arrays(
        jnp.asarray(mu, jnp.float64), jnp.asarray(temperature, jnp.float64)
    )
    if (part, mechanism) == ("orbital", "intrinsic"):
        k = jnp.asarray(k, dtype=jnp.float64)
        chi, _ = orbital_chi_integrand(model, k, mu.reshape(-1), degen_tol)
        return chi.reshape(mu.shape + (3, 3, 3))
    out = _INTEGRANDS[mechanism](model, k, mu, temperature, part, route, degen_tol)
    return -jnp.asarray(g_factor, jnp.float64) * out if part == "spin" else out


def _validate(model, part, mechanism, route):
    if part not in PARTS:
        raise ValueError(
            f"unknown part={part!r}; use one of {PARTS} (convert each to SI before adding)."
        )
    if mechanism not in MECHANISMS:
        raise ValueError(f"unknown mechanism={mechanism!r}; use one of {MECHANISMS}.")
    if route not in ROUTES:
        raise ValueError(f"unknown route={route!r}; use one of {ROUTES}.")
    if part == "spin" and model.spin_operators() is None:
        raise ValueError(
            f"part='spin' needs spin operators, but {type(model).__name__} has none (give `spin=` "
            "to TightBinding/from_function, or use a spinful model such as Rashba)."
        )


@eqx.filter_jit
def _nonlinear(model, mesh, mu, temperature, scale, part, mechanism, route, degen_tol, chunk_size):
    fn = _INTEGRANDS[mechanism]
    per_k = lambda k: fn(model, k, mu, temperature, part, route, degen_tol)
    return scale[..., None, None, None] * integrate(per_k, mesh, chunk_size=chunk_size)


def nonlinear_kinetic_magnetization(
    model: AbstractModel,
    mesh: AbstractMesh,
    *,
    mu,
    temperature=0.0,
    part: str,
    mechanism: str,
    tau=None,
    g_factor=2.0,
    route: str = "fermi_surface",
    degen_tol: float = DEFAULT_DEGEN_TOL,
    chunk_size: int = DEFAULT_CHUNK,
) -> Float[Array, "... 3 3 3"]:
    r"""Second-order kinetic magnetization tensor χ, δM^i = χ^{ijk} E_j E_k (symmetric in j, k).

    ``part`` ∈ {"spin", "orbital"}; ``mechanism``:

    * ``"extrinsic"`` (τ², T-odd): :math:`χ^{ijk} = τ^2\sum_n\int X_n^i\,∂_j∂_k f_0(E_n)`,
      X = −g⟨S⟩ or m_n;
    * ``"tau_linear"`` (τ¹, T-even; Xiao et al., PRL 130, 166302 (2023),
      doi:10.1103/PhysRevLett.130.166302): :math:`χ^{ijk} = τ\sum_n\int Y_n^{ij} v_n^k f_0'`,
      Y = −gΦ_n or F_n (orbital: derived here);
    * ``"intrinsic"`` (τ⁰, T-odd). Spin (Xiao et al., PRL 129, 086602 (2022),
      doi:10.1103/PhysRevLett.129.086602; projector formulation derived here):
      :math:`χ^{ijk} = −g\sum_n\int[f_0\,\mathrm{Tr}(S^i P_n^{(2)jk}) − ½ f_0' G_n^{jk}⟨S^i⟩_n]`.
      Orbital (derived here, :mod:`qgeo_jax._nonlinear_orbital`): band insulators only, T = 0,
      μ in a gap, Monkhorst–Pack mesh: :math:`χ^{ijk} = ½\,∂α_{jk}/∂B_i` with α the static
      electronic polarizability, the B-derivative taken analytically in k-space; a band crossing
      μ, T > 0 or another mesh raise a clear error.

    See the module docstring for derivations, symmetry and units. ``route`` (extrinsic and
    tau_linear): ``"fermi_surface"`` (default; one k-derivative by autodiff, weights f0', needs
    T > 0) or ``"fermi_sea"`` (all k-derivatives on the band quantity by forward-mode autodiff,
    weights f0; on a lattice the two agree — on a continuum mesh only if f0 vanishes at its edge).
    ``tau`` (units ħ/E, finite > 0, may broadcast with μ, T) is required for extrinsic and
    tau_linear and forbidden for intrinsic. The intrinsic spin term accepts T ≥ 0 (at T = 0 its
    f0' term is dropped: exact for insulators, μ in a gap); the intrinsic orbital term needs T = 0.

    Returns χ of shape broadcast(mu, temperature[, tau]) + (3, 3, 3). One jit-compiled,
    differentiable pass over ``mesh``; μ, T, τ, g and model parameter values do not recompile.
    """
    _validate(model, part, mechanism, route)
    require_x64()
    if mesh.dim != model.dim:
        raise ValueError(f"the mesh is {mesh.dim}D but {type(model).__name__} is {model.dim}D.")
    surface = mechanism != "intrinsic" and route == "fermi_surface"
    mu, temperature = as_mu_temperature(mu, temperature, fermi_surface=surface)
    if mechanism == "intrinsic":
        if tau is not None:
            raise ValueError(
                "mechanism='intrinsic' does not depend on the relaxation time; do not pass tau."
            )
        scale = jnp.ones(())
    else:
        tau = check_tau(tau, f"mechanism={mechanism!r}")
        scale = tau**2 if mechanism == "extrinsic" else tau
    if (part, mechanism) == ("orbital", "intrinsic"):
        return intrinsic_orbital_chi(model, mesh, mu, temperature, degen_tol, chunk_size)
    if part == "spin":
        scale = -jnp.asarray(g_factor, dtype=jnp.float64) * scale
    return _nonlinear(
        model, mesh, mu, temperature, scale, part, mechanism, route, degen_tol, chunk_size
    )
