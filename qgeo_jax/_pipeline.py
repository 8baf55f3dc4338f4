r"""All responses in one pass over the mesh: one eigh per k, one contraction with all μ weights.

Every equilibrium and kinetic response of this package has the form

.. math:: R(μ, T) = \int\!\frac{d^dk}{(2π)^d}\sum_n A_n(\mathbf k)\; w(E_n(\mathbf k) - μ; T),
          \qquad w ∈ \{f_0,\; f_0',\; -T\ln(1 - f_0)\},

with a band-resolved feature A_n that does not depend on μ or T (the intrinsic spin response, seed
eq. 7, too: Σ_{nm}(f_n − f_m) K_{nm} = Σ_n f_n Σ_m (K_{nm} − K_{mn}) for any K, and its
K_{nm} = Im(S_{nm} v_{mn})/(E_n − E_m)² is odd under n ↔ m). :func:`responses` therefore does, per
chunk of k-points,

1. one H(k), ∂H(k) and one eigh per k. ∂H by forward mode through ``model.hamiltonian``; for a
   concrete :class:`~qgeo_jax.models.TightBinding` the hoppings are grouped by lattice vector R
   once, and H, ∂_aH = Σ_R [1, i(R + τ_j − τ_i)_a] e^{ik·(R+τ_j−τ_i)} T_R come from one small
   product per k instead of three scatters of every hopping (same values; 2× cheaper H+∂H+eigh
   at N = 32);
2. only the band-basis matrix elements the requested quantities need — the full rotation
   U†∂H U for Ω, m, F and Φ, else only the diagonals Σ_i conj(U_in)(∂H U)_in. The spin Berry
   curvature Φ_n^{ij} = −2 Im Σ_α U*_{αn} (S^i U Z^j)_{αn}, Z^j_{mn} = v^j_{mn}/(E_n − E_m)², costs
   d GEMMs (U Z^j) when the spin operators are sparse (S^i x by gathers: 1 ⊗ σ/2 has 2 non-zeros
   per row), instead of the rotation U†S U (6 GEMMs); and when S = ½σ on pairs of basis states
   (spinor orbitals in any ordering) all three U†S^iU come from G = U_↑†U_↑ and K = U_↑†U_↓,
   two half-size GEMMs (one GEMM's worth, :func:`_spin_half_pairs`). For the positions
   convention the pipeline drops the diagonal phase e^{ik·τ} when the spin operators are on-site
   (:func:`_phase_free`): spectrum and band-basis matrices are unchanged, and 3n² phase factors
   per k are not recomputed inside XLA's fused consumers;
3. the features A_{kn} of every requested quantity, stacked into three matrices (one per weight w);
4. ONE contraction per weight: [μ × (k, n)] @ [(k, n) × features] (``mu_method="exact"``), or a
   deposit of the features on a uniform energy grid (``mu_method="interpolated"``, see below).

Quantities (name — per-band feature · weight, output shape, standalone function; S is the broadcast
shape of μ and T, and τ for the extrinsic ones; model units as the standalone functions):

* ``orbital_magnetization`` — m_n f0 + Ω_n (−T ln(1 − f0)), S + (3,); :func:`orbital_magnetization`
* ``spin_magnetization`` — −g ⟨S⟩_n f0, S + (3,); :func:`spin_magnetization`
* ``anomalous_hall_conductivity`` — −Ω_n f0, S + (3,); :func:`anomalous_hall_conductivity`
* ``kinetic_spin_extrinsic`` — −g τ ⟨S^i⟩_n v_n^j f0', S + (3, 3); ``kinetic_magnetization``
  (part="spin", mechanism="extrinsic"), seed eq. 6
* ``kinetic_spin_intrinsic`` — −g Φ_n^{ij} f0, S + (3, 3); (part="spin",
  mechanism="intrinsic"), eq. 7
* ``kinetic_orbital_extrinsic`` — τ m_n^i v_n^j f0', S + (3, 3); (part="orbital",
  mechanism="extrinsic"), eq. 8
* ``kinetic_orbital_intrinsic`` — F_n^{ij} f0, S + (3, 3); :func:`orbital_magnetoelectric_tensor`
  (``metric_term=None``), eqs. 9–10

(``orbital_magnetoelectric_tensor`` is accepted as an alias of ``kinetic_orbital_intrinsic``.)
Formulas and sources: Xiao, Shi, Niu, PRL 95, 137204 (2005), doi:10.1103/PhysRevLett.95.137204
(M^O); Xiao, Chang, Niu, RMP 82, 1959 (2010), doi:10.1103/RevModPhys.82.1959 (σ, Ω, m); Garate &
Franz, PRL 104, 146802 (2010), doi:10.1103/PhysRevLett.104.146802 (Φ); F_n is the corrected seed
eq. (10) of :mod:`qgeo_jax._magnetoelectric`. Degenerate sets are treated as in the standalone
functions (⟨S⟩, v, m averaged before the products of the extrinsic terms; F averaged; pairs closer
than ``degen_tol`` dropped).

The magnetoelectric kernel F_n (the most expensive one) is contracted here without the 3 × 3 × n
band-batched products of :func:`qgeo_jax.magnetoelectric_interband`: with
B^j_{nm} = A^j_{nm}/(E_n − E_m)
= −i v^j_{nm}/(E_n − E_m)², F_n^{ij} = 2 Re Σ_m m^i_{mn} B^j_{nm} is an elementwise product and a
column sum, and only the components of m̂ a model of dimension d can have are built (2D: m^z alone,
2 GEMMs instead of 6).

μ-interpolated weights (``mu_method="interpolated"``, T > 0 only). Deposit A_{kn} on a uniform grid
ε_g = ε_0 + g h with the four cubic-Lagrange weights L_g(E) of the nodes around E, H_g =
Σ_{kn} A_{kn} L_g(E_{kn}); then R(μ_j) ≈ Σ_g H_g w(ε_g − μ_j) — the per-k cost no longer grows
with the number of μ. This is exact for a w that is a cubic between nodes; the error is that of
cubic interpolation of w,

.. math:: |w(E) - \textstyle\sum_g L_g(E) w(ε_g)| \le \frac{9}{16}\frac{h^4}{4!}\max|w^{(4)}|
          \approx 0.0234\,h^4 \max|w^{(4)}|,

where, with σ the logistic function (max|σ‴| = 0.125, max|σ⁗| = 0.128, max|σ⁽⁵⁾| = 0.25),
max|∂⁴f0/∂E⁴| = 0.128/T⁴, max|∂⁴f0'/∂E⁴| = 0.25/T⁵ and max|∂⁴(−T ln(1 − f0))/∂E⁴| = 0.125/T³:
the errors are at most 3.0e-3 (h/T)⁴, 5.9e-3 (h/T)⁴/T and 2.9e-3 T (h/T)⁴ times Σ_kn |A_kn|.
The grid spacing is h ≤ T_min/c with ``interp_spacing = 1/c`` (default 1/8). Measured (101 μ,
T = 0.05, RashbaLattice 48² and a random 8-band model 24², largest error over μ relative to the
largest |R|): h/T = 1/2: up to 1e-3; 1/4: up to 8e-5; 1/8: up to 5e-6 (Fermi-sea quantities
1e-8–2e-6); 1/16: up to 3e-7 — a factor ~16 per halving, as (h/T)⁴ predicts. Energies below the
grid window [min μ − a T_max, max μ + a T_max] (a = 40) enter in closed form (f0 = 1, f0' = 0,
−T ln(1 − f0) = μ − E, each to e^{−40} ≈ 4e-18); energies above it contribute nothing. The
window — hence the grid size G — is set from the concrete μ and T, not from the bands (no
pre-pass): G ≈ c (Δμ/T_min + 80 T_max/T_min), rounded up to a multiple of 256 so that nearby μ
ranges reuse the compiled function; or give G with ``interp_points``.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

from ._bz import DEFAULT_CHUNK, AbstractMesh
from ._geometry import degenerate_average
from ._kinetic import _diagonal
from ._linalg import denominators, eigh
from ._occupation import fermi_weights
from ._responses import _check_mesh, as_mu_temperature
from ._spectrum import DEFAULT_DEGEN_TOL, hamiltonian_and_gradient
from ._validate import check_tau, is_concrete

QUANTITIES = (
    "orbital_magnetization",
    "spin_magnetization",
    "anomalous_hall_conductivity",
    "kinetic_spin_extrinsic",
    "kinetic_spin_intrinsic",
    "kinetic_orbital_extrinsic",
    "kinetic_orbital_intrinsic",
)
ALIASES = {"orbital_magnetoelectric_tensor": "kinetic_orbital_intrinsic"}
_SPIN = ("spin_magnetization", "kinetic_spin_extrinsic", "kinetic_spin_intrinsic")
_EXTRINSIC = ("kinetic_spin_extrinsic", "kinetic_orbital_extrinsic")
MU_METHODS = ("exact", "interpolated")

# Half-width of the interpolation window in units of T_max: outside it the Fermi weights equal
# their limits to e^{-40} ≈ 4e-18.
_WINDOW = 40.0
# Cyclic (i, a, b): X^i = X^{ab} for the vector components of Ω, m, m̂.
_CYCLIC = ((0, 1, 2), (1, 2, 0), (2, 0, 1))


class _Static:
    """A hashable wrapper of numpy arrays (static data for jit: compared and hashed by value)."""

    def __init__(self, *arrays):
        self.arrays = tuple(np.asarray(a) for a in arrays)
        self._key = tuple((a.dtype.str, a.shape, a.tobytes()) for a in self.arrays)

    def __eq__(self, other):
        return isinstance(other, _Static) and self._key == other._key

    def __hash__(self):
        return hash(self._key)


def _hopping_groups(model):
    """Concrete TightBinding model: (unique R (nR, dim), group of each hopping); else None.

    With the hoppings grouped by lattice vector, H(k) and ∂H(k) come from one small product
    [e^{ik·R}, i R_a e^{ik·R}] @ [T_R] instead of three scatters of all hoppings per k.
    """
    from .models._tight_binding import TightBinding

    if type(model) is not TightBinding or not is_concrete(model.hop_R):
        return None
    unique, inverse = np.unique(np.asarray(model.hop_R), axis=0, return_inverse=True)
    return _Static(unique, inverse.reshape(-1))


def _sparse_spin(model):
    """Concrete spin operators as (columns, values) of their ≤ r non-zeros per row, or None.

    S U then costs O(r n²) gathers instead of a GEMM (S = 1 ⊗ σ/2 has r = 2); used if r ≤ n/4.
    """
    s = model.spin_operators()
    if s is None or not is_concrete(s):
        return None
    s = np.asarray(s)
    n = s.shape[-1]
    r = max(1, int(np.max(np.count_nonzero(s, axis=-1))))
    if r > max(1, n // 4):
        return None
    order = np.argsort(s == 0, axis=-1, kind="stable")[..., :r]  # non-zeros first
    return _Static(order.astype(np.int32), np.take_along_axis(s, order, axis=-1))


def _spin_half_pairs(model):
    """Concrete S = ½σ on pairs of basis states: (up, down) index arrays, or None.

    True when the basis splits into pairs (u_a, d_a) with S^z = ½(|u⟩⟨u| − |d⟩⟨d|),
    S^x = ½(|u⟩⟨d| + |d⟩⟨u|), S^y = ½(−i|u⟩⟨d| + i|d⟩⟨u|) — spinor orbitals in any ordering
    (1 ⊗ σ/2, σ/2 ⊗ 1, Wannier90's). Then the band-basis spin matrices come from the two half-size
    products G = U_u†U_u and K = U_u†U_d (rows of U on the up / down states): S^z = G − 1/2,
    S^x = (K + K†)/2, S^y = −i(K − K†)/2 (using U_d†U_d = 1 − G), one GEMM's worth for all three.
    """
    s = model.spin_operators()
    if s is None or not is_concrete(s):
        return None
    s = np.asarray(s)
    n = s.shape[-1]
    diag = np.real(np.diagonal(s[2]))
    up, down = np.flatnonzero(diag > 0.25), np.flatnonzero(diag < -0.25)
    if n % 2 or up.size != n // 2 or down.size != n // 2:
        return None
    partner = np.argmax(np.abs(s[0][up][:, down]), axis=1)
    down = down[partner]
    ref = np.zeros((3, n, n), complex)
    ref[2, up, up], ref[2, down, down] = 0.5, -0.5
    ref[0, up, down] = ref[0, down, up] = 0.5
    ref[1, up, down], ref[1, down, up] = -0.5j, 0.5j
    if not np.array_equal(s, ref.astype(s.dtype)):
        return None
    return _Static(up.astype(np.int32), down.astype(np.int32))


def _vector_components(dim: int) -> tuple[int, ...]:
    """Components i of an axial vector X^i = X^{ab} (a, b < dim) that a dim-D model can have."""
    return tuple(i for i, a, b in _CYCLIC if a < dim and b < dim)


# --------------------------------------------------------------------------------------------------
# band-resolved features at one k
# --------------------------------------------------------------------------------------------------
def magnetoelectric_kernel(energies, velocity, degen_tol):
    r"""F_n^{ij} = 2 Re Σ_{m≠n} m^i_{mn} 𝒜^j_{nm}/(E_n − E_m), i in the model's vector components.

    Same values as :func:`qgeo_jax.magnetoelectric_interband` (corrected seed eq. 10), contracted
    as an elementwise product and a column sum. ``velocity`` holds the model's own ``dim``
    components v^a_{nm} = ⟨n|∂_aH|m⟩ (no zero padding). Returns (n, len(comps), dim) and ``comps``.
    """
    dim = velocity.shape[0]
    comps = _vector_components(dim)
    if not comps:
        return jnp.zeros(energies.shape + (0, dim)), comps
    inv1, inv2, _ = denominators(energies, degen_tol)  # [n, m] = 1/(E_n − E_m)
    cdt = velocity.dtype
    conn = -1j * velocity * inv1.astype(cdt)  # 𝒜^a_{mn} = i v^a_{mn}/(E_n − E_m)
    vn = jnp.real(jnp.diagonal(velocity, axis1=-2, axis2=-1)).astype(cdt)  # (dim, n)
    ia = np.array([a for i, a, b in _CYCLIC if i in comps])
    ib = np.array([b for i, a, b in _CYCLIC if i in comps])
    # m^i_{mn} = ½[Σ_l (v^a_{ml} 𝒜^b_{ln} − v^b_{ml} 𝒜^a_{ln}) + v^a_n 𝒜^b_{mn} − v^b_n 𝒜^a_{mn}]
    mm = _mm(velocity[ia], conn[ib]) - _mm(velocity[ib], conn[ia])
    mm = 0.5 * (mm + vn[ia][:, None, :] * conn[ib] - vn[ib][:, None, :] * conn[ia])
    # B^j_{nm} = 𝒜^j_{nm}/(E_n − E_m) = −i v^j_{nm}/(E_n − E_m)²; we need its transpose [m, n].
    # v is Hermitian, so v_{mn} = conj(v_{nm}): no transposed copy needed.
    bt = -1j * jnp.conj(velocity) * inv2.astype(cdt)
    f = jnp.sum(mm[:, None] * bt[None], axis=-2)  # [i, j, n] = Σ_m m^i_{mn} B^j_{nm}
    return 2.0 * jnp.real(jnp.moveaxis(f, -1, 0)), comps


def _hopping_matrices(model, groups):
    """T_R[i, j] = Σ t over the hoppings (i, j, R): one matrix per lattice vector R (per chunk)."""
    if groups is None:
        return None
    unique, inverse = groups.arrays
    n = model.onsite.shape[0]
    cplx = jnp.result_type(model.hopping.dtype, model.onsite.dtype, jnp.complex64)
    return (
        jnp.zeros((unique.shape[0], n, n), cplx)
        .at[inverse, model.hop_i, model.hop_j]
        .add(model.hopping.astype(cplx))
    )


def _phase_free(model, spin: bool) -> bool:
    """True if the grouped-hopping route of a TightBinding model may work in the gauge without
    the positions phase D = e^{ik·τ}.

    With the positions convention H = D† X D, X = Σ_R T_R e^{ik·R}, and
    ∂_a H = D†(∂_a X + i X ∘ (τ_j − τ_i)_a)D (elementwise in ij). Every band-basis matrix the
    pipeline forms, U†(∂H)U and U†S U, is the same with (X, U_X = D U) in place of (H, U) —
    provided S couples only orbitals at the same position ([S, τ] = 0, true for on-site spin).
    Dropping D saves the 3n² complex phase factors per k that XLA recomputed inside each fused
    consumer (~0.2 of an eigh at n = 64).
    """
    if getattr(model, "convention", None) != "positions":
        return False
    if not spin:
        return True
    s = model.spin_operators()
    if s is None or not is_concrete(s) or not is_concrete(model.reduced_positions):
        return False
    tau = np.asarray(model.reduced_positions)
    same = np.all(tau[:, None, :] == tau[None, :, :], axis=-1)
    return bool(np.all((np.asarray(s) == 0) | same[None]))


def _hamiltonian_and_gradient(model, k, groups, t_r, phase: bool = True):
    """H(k) and the lean ∂_a H(k) (a < dim): the model's own route, or the grouped-hopping one.

    ``phase=False`` (positions convention only): return D H D† and D ∂_aH D† instead, the same
    spectrum and band-basis matrix elements (see :func:`_phase_free`)."""
    if groups is None:
        return hamiltonian_and_gradient(model, k, pad=False)
    unique, _ = groups.arrays
    k = jnp.asarray(k, dtype=jnp.float64)
    cplx = t_r.dtype
    r_cart = jnp.asarray(unique, dtype=k.dtype) @ model.lattice_vectors  # (nR, dim)
    e = jnp.exp(1j * (r_cart @ k)).astype(cplx)
    coef = jnp.concatenate(
        [e[None], (1j * r_cart.T * e[None]).astype(cplx)], axis=0
    )  # (1 + dim, nR)
    x = jnp.tensordot(coef, t_r, axes=(1, 0))  # Σ_R e^{ik·R} T_R and its k-derivatives
    if model.convention == "positions":
        tau = model.reduced_positions @ model.lattice_vectors  # (n, dim)
        d = jnp.exp(1j * (tau @ k)).astype(cplx)
        # h_ij = e^{-ik·τ_i} X_ij e^{ik·τ_j}; ∂_a brings down i(τ_j − τ_i)_a
        dtau = (tau.T[:, None, :] - tau.T[:, :, None]).astype(cplx)  # [a, i, j] = τ_j − τ_i
        x = jnp.concatenate([x[:1], x[1:] + 1j * dtau * x[:1]], axis=0)
        if phase:
            x = jnp.conj(d)[None, :, None] * x * d[None, None, :]
    full = x + jnp.conj(jnp.swapaxes(x, -1, -2))
    h = full[0] + jnp.diag(model.onsite.astype(cplx))
    return h, full[1:]


def _mm(a, b):
    """a @ b over the last two axes; a broadcast-multiply-reduce for n ≤ 4 (tiny dot_generals are
    slow on CPU, see PERF_NOTES)."""
    if a.shape[-1] <= 4:
        return jnp.sum(a[..., :, :, None] * b[..., None, :, :], axis=-2)
    return a @ b


def _band_diagonal(u, op):
    """Re ⟨n|op_a|n⟩ as (n, a): broadcast-reduce for n = 2, else one GEMM op_a U per component.

    (The n³ broadcast of :func:`qgeo_jax._kinetic._diagonal` cost ~1× an eigh at n = 4 and 2× at
    n = 8 in the extrinsic-only pipeline.)
    """
    if u.shape[-1] <= 2:
        return _diagonal(u, op)
    return jnp.real(jnp.sum(jnp.conj(u)[None] * (op @ u[None]), axis=1)).T


def _spin_times(plan, s, x):
    """S^i @ x for each spin component i: (3, n, n) from x (n, n), by sparse gathers if possible."""
    if plan.spin_sparse is None:
        return _mm(s, x[None])
    cols, vals = plan.spin_sparse.arrays
    return jnp.sum(jnp.asarray(vals, x.dtype)[..., None] * x[cols], axis=-2)


def _features(model, k, plan, degen_tol, t_r=None):
    """Energies (n,) and the feature blocks (n, F_w) for each weight w ∈ {f, g, d} at one k."""
    q = plan.quantities
    dim = model.dim
    need_omega_m = bool(
        {"orbital_magnetization", "anomalous_hall_conductivity", "kinetic_orbital_extrinsic"}
        & set(q)
    )
    need_full_v = need_omega_m or "kinetic_spin_intrinsic" in q or "kinetic_orbital_intrinsic" in q
    need_vdiag = need_full_v or bool(set(_EXTRINSIC) & set(q))

    h, dh = _hamiltonian_and_gradient(model, k, plan.hoppings, t_r, phase=not plan.phase_free)
    energies, u = eigh(h, degen_tol)
    inv1, inv2, degenerate = denominators(energies, degen_tol)
    uh = jnp.conj(u.T)
    avg = lambda x: degenerate_average(x, degenerate)
    n = energies.shape[0]

    v = vdiag = None
    if need_full_v:
        # ∂H U as a dot for 2 < n ≤ 4 too: a broadcast-reduce made XLA fuse (and repeat n times)
        # the construction of ∂H into the product, 1.3 µs per k at n = 4 (n = 2: broadcast wins).
        v = _mm(uh[None], _mm(dh, u[None]) if n <= 2 else dh @ u[None])  # (dim, n, n)
        vdiag = jnp.real(jnp.diagonal(v, axis1=-2, axis2=-1)).T  # (n, dim)
    elif need_vdiag:
        vdiag = _band_diagonal(u, dh)
    omega = morb = None
    if need_omega_m:
        vc = _vector_components(dim)
        if dim == 2:
            im = jnp.imag(v[0] * jnp.conj(v[1]))[None]  # v^y_{mn} = conj(v^y_{nm})
        else:
            im = (
                jnp.stack([jnp.imag(v[a] * jnp.conj(v[b])) for i, a, b in _CYCLIC if i in vc])
                if vc
                else jnp.zeros((0, n, n))
            )
        omega = -2.0 * jnp.sum(im * inv2, axis=-1).T  # (n, c)
        morb = -jnp.sum(im * inv1, axis=-1).T

    spin_diag = phi = None
    if set(_SPIN) & set(q):
        s = jnp.asarray(model.spin_operators(), dtype=u.dtype)
        if plan.spin_sparse is not None:
            spin_diag = jnp.real(jnp.sum(jnp.conj(u)[None] * _spin_times(plan, s, u), axis=1)).T
        else:
            spin_diag = _band_diagonal(u, s)  # (n, 3)
        if "kinetic_spin_intrinsic" in q:
            # Φ_n^{ij} = −2 Im Σ_m S^i_{nm} v^j_{mn} (E_n − E_m)^{-2}
            #          = −2 Im Σ_α U*_{αn} (S^i U Z^j)_{αn}, Z^j_{mn} = v^j_{mn}/(E_n − E_m)²:
            # dim GEMMs U Z^j, and S^i (U Z^j) by sparse gathers if
            # S is sparse; else the rotation U†S U (2 GEMMs per spin component). For S = ½σ on
            # pairs of basis states (any spinor model) U†S U costs one GEMM in all, from the two
            # half-size products of _spin_half_pairs.
            if plan.spin_half is not None:
                up, down = plan.spin_half.arrays
                uu_h = jnp.conj(u[up].T)
                g, kk = _mm(uu_h, u[up]), _mm(uu_h, u[down])
                kh = jnp.conj(kk.T)
                s_band = jnp.stack(
                    [0.5 * (kk + kh), -0.5j * (kk - kh), g - 0.5 * jnp.eye(n, dtype=g.dtype)]
                )
            elif plan.spin_sparse is not None:
                z = v * inv2.astype(v.dtype)
                w = jnp.stack(
                    [_spin_times(plan, s, _mm(u, z[j])) for j in range(dim)], axis=1
                )  # (3, dim, α, n)
                phi = -2.0 * jnp.imag(jnp.sum(jnp.conj(u)[None, None] * w, axis=-2))  # (3, dim, n)
            else:
                s_band = _mm(_mm(uh[None], s), u[None])
            if phi is None:  # from the band-basis spin matrices (v_{mn} = conj(v_{nm}))
                phi = -2.0 * jnp.sum(jnp.imag(s_band[:, None] * jnp.conj(v)[None]) * inv2, axis=-1)

    # Everything that is averaged over degenerate sets goes through ONE masked average (one small
    # product per k instead of one per array; at n = 4 they cost ~0.1 of an eigh each).
    to_avg = {}
    if "kinetic_spin_extrinsic" in q:
        to_avg["spin"] = spin_diag
    if set(_EXTRINSIC) & set(q):
        to_avg["v"] = vdiag
    if "kinetic_orbital_extrinsic" in q:
        to_avg["m"] = morb
    if "kinetic_orbital_intrinsic" in q:
        to_avg["F"] = magnetoelectric_kernel(energies, v, degen_tol)[0].reshape(n, -1)
    if to_avg:
        stacked = avg(jnp.concatenate(list(to_avg.values()), axis=1))
        cuts = np.cumsum([x.shape[1] for x in to_avg.values()])[:-1]
        to_avg = dict(zip(to_avg, jnp.split(stacked, cuts, axis=1), strict=True))

    blocks = {"f": [], "g": [], "d": []}
    for name in q:
        if name == "orbital_magnetization":
            blocks["f"].append(morb)
            blocks["g"].append(omega)
        elif name == "anomalous_hall_conductivity":
            blocks["f"].append(omega)
        elif name == "spin_magnetization":
            blocks["f"].append(spin_diag)
        elif name in _EXTRINSIC:
            x = to_avg["spin" if name == "kinetic_spin_extrinsic" else "m"]
            blocks["d"].append((x[:, :, None] * to_avg["v"][:, None, :]).reshape(n, -1))
        elif name == "kinetic_spin_intrinsic":
            blocks["f"].append(phi.transpose(2, 0, 1).reshape(n, -1))
        elif name == "kinetic_orbital_intrinsic":
            blocks["f"].append(to_avg["F"])
    cat = lambda bs: jnp.concatenate(bs, axis=1) if bs else jnp.zeros((n, 0))
    return energies, {w: cat(bs) for w, bs in blocks.items()}


class _Plan(eqx.Module):
    """Static layout: the quantities, and their column slices in the three feature blocks."""

    quantities: tuple[str, ...] = eqx.field(static=True)
    dim: int = eqx.field(static=True)
    hoppings: _Static | None = eqx.field(static=True, default=None)
    spin_sparse: _Static | None = eqx.field(static=True, default=None)
    spin_half: _Static | None = eqx.field(static=True, default=None)
    phase_free: bool = eqx.field(static=True, default=False)

    def widths(self):
        """[(name, weight, width)] in the order _features appends them."""
        c = len(_vector_components(self.dim))
        d = self.dim
        out = []
        for name in self.quantities:
            if name == "orbital_magnetization":
                out += [(name, "f", c), (name, "g", c)]
            elif name == "anomalous_hall_conductivity":
                out.append((name, "f", c))
            elif name == "spin_magnetization":
                out.append((name, "f", 3))
            elif name in _EXTRINSIC:
                out.append((name, "d", (3 if name == "kinetic_spin_extrinsic" else c) * d))
            elif name == "kinetic_spin_intrinsic":
                out.append((name, "f", 3 * d))
            elif name == "kinetic_orbital_intrinsic":
                out.append((name, "f", c * d))
        return out

    def slices(self):
        offset = {"f": 0, "g": 0, "d": 0}
        out = []
        for name, w, width in self.widths():
            out.append((name, w, slice(offset[w], offset[w] + width)))
            offset[w] += width
        return out


# --------------------------------------------------------------------------------------------------
# chunked reduction
# --------------------------------------------------------------------------------------------------
def _chunk_features(model, mesh, plan, degen_tol, chunk_size, c):
    """Energies (C·n,) and features {w: (C·n, F_w)} of chunk ``c``, mesh weights folded in."""
    k, wk = mesh.chunk(c, chunk_size)
    t_r = _hopping_matrices(model, plan.hoppings)
    energies, feats = jax.vmap(lambda kk: _features(model, kk, plan, degen_tol, t_r))(
        k.reshape(chunk_size, mesh.dim)
    )
    flat = {
        w: (wk[:, None, None] * x).reshape(x.shape[0] * x.shape[1], x.shape[2])
        for w, x in feats.items()
    }
    return energies.reshape(-1), flat


def _weights_needed(plan):
    return {w for _, w, _ in plan.widths()}


@eqx.filter_jit
def _exact(model, mesh, plan, mu, temperature, degen_tol, chunk_size):
    """Σ_k Σ_n w(E_kn − μ_p; T_p) A_kn for every weight block: (P, F_w), μ and T flattened to P."""
    need = _weights_needed(plan)
    mu_p, t_p = mu.reshape(-1, 1), temperature.reshape(-1, 1)

    def chunk(c):
        energies, feats = _chunk_features(model, mesh, plan, degen_tol, chunk_size, c)
        f, g, d = fermi_weights(energies[None, :], mu_p, t_p, derivative=True)
        ws = {"f": f, "g": g, "d": d}
        # One [P × (C·n)] @ [(C·n) × F] product per weight (unused weights are dead code to XLA).
        return {w: ws[w] @ feats[w] for w in need}

    chunk = jax.checkpoint(chunk)
    init = jax.tree_util.tree_map(
        lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(chunk, jnp.asarray(0))
    )

    def body(acc, c):
        return jax.tree_util.tree_map(jnp.add, acc, chunk(c)), None

    total, _ = jax.lax.scan(body, init, jnp.arange(mesh.num_chunks(chunk_size)))
    return total


def lagrange_weights(t):
    """Cubic Lagrange weights of the nodes −1, 0, 1, 2 at t ∈ [0, 1): (…, 4); they sum to 1."""
    return jnp.stack(
        [
            -t * (t - 1) * (t - 2) / 6,
            (t + 1) * (t - 1) * (t - 2) / 2,
            -(t + 1) * t * (t - 2) / 2,
            (t + 1) * t * (t - 1) / 6,
        ],
        axis=-1,
    )


@eqx.filter_jit
def _interpolated(model, mesh, plan, mu, temperature, degen_tol, chunk_size, n_grid):
    """As :func:`_exact`, through the energy-grid histogram (module docstring)."""
    need = _weights_needed(plan)
    mu_p, t_p = mu.reshape(-1), temperature.reshape(-1)
    # Grid placement is a fixed choice, not a function to differentiate through.
    lo = jax.lax.stop_gradient(jnp.min(mu_p) - _WINDOW * jnp.max(t_p))
    hi = jax.lax.stop_gradient(jnp.max(mu_p) + _WINDOW * jnp.max(t_p))
    h = (hi - lo) / (n_grid - 3)
    e0 = lo - h  # nodes e0 + g h, g = 0 .. n_grid − 1 cover [lo − h, hi + 2h]
    widths = {w: sum(width for _, ww, width in plan.widths() if ww == w) for w in "fgd"}
    order = [w for w in "fgd" if w in need]
    cols = np.cumsum([0] + [widths[w] for w in order])

    def chunk_parts(c):
        energies, feats = _chunk_features(model, mesh, plan, degen_tol, chunk_size, c)
        a = jnp.concatenate([feats[w] for w in order], axis=1)  # (C·n, F)
        below = energies < lo
        inside = ~below & (energies <= hi)
        x = (jnp.clip(energies, lo, hi) - e0) / h
        i = jnp.clip(jnp.floor(x).astype(jnp.int32), 1, n_grid - 3)
        lw = lagrange_weights(x - i) * inside[:, None]
        idx = (i[:, None] + jnp.arange(-1, 3)[None, :]).reshape(-1)
        vals = (lw[:, :, None] * a[:, None, :]).reshape(-1, a.shape[1])
        m0 = jnp.sum(jnp.where(below[:, None], a, 0.0), axis=0)
        m1 = jnp.sum(jnp.where(below[:, None], a * energies[:, None], 0.0), axis=0)
        return idx, vals, m0, m1

    chunk_parts = jax.checkpoint(chunk_parts)
    n_cols = int(cols[-1])

    def body(acc, c):
        hist, m0, m1 = acc
        idx, vals, d0, d1 = chunk_parts(c)
        return (hist.at[idx].add(vals), m0 + d0, m1 + d1), None

    init = (jnp.zeros((n_grid, n_cols)), jnp.zeros(n_cols), jnp.zeros(n_cols))
    (hist, m0, m1), _ = jax.lax.scan(body, init, jnp.arange(mesh.num_chunks(chunk_size)))

    grid = e0 + h * jnp.arange(n_grid)
    f, g, d = fermi_weights(grid[None, :], mu_p[:, None], t_p[:, None], derivative=True)  # (P, G)
    out = {}
    for w, a, b in zip(order, cols[:-1], cols[1:], strict=True):
        r = {"f": f, "g": g, "d": d}[w] @ hist[:, a:b]
        if w == "f":
            r = r + m0[None, a:b]
        elif w == "g":
            r = r + mu_p[:, None] * m0[None, a:b] - m1[None, a:b]
        out[w] = r
    return out


def grid_points(mu, temperature, spacing: float) -> int:
    """Grid nodes for a spacing h ≤ ``spacing`` · min T over the window (a multiple of 256)."""
    mu, temperature = np.asarray(mu, dtype=float), np.asarray(temperature, dtype=float)
    width = float(np.max(mu) - np.min(mu)) + 2 * _WINDOW * float(np.max(temperature))
    need = math.ceil(width / (spacing * float(np.min(temperature)))) + 4
    return 256 * math.ceil(need / 256)


# --------------------------------------------------------------------------------------------------
# public entry point
# --------------------------------------------------------------------------------------------------
def _resolve(quantities, model, tau):
    if quantities is None:
        has_spin = model.spin_operators() is not None
        return tuple(
            q
            for q in QUANTITIES
            if (has_spin or q not in _SPIN) and (tau is not None or q not in _EXTRINSIC)
        )
    if isinstance(quantities, str):
        quantities = (quantities,)
    out = []
    for q in quantities:
        q = ALIASES.get(q, q)
        if q not in QUANTITIES:
            raise ValueError(f"unknown quantity {q!r}; choose from {QUANTITIES + tuple(ALIASES)}.")
        if q not in out:
            out.append(q)
    if not out:
        raise ValueError(f"quantities is empty; name at least one of {QUANTITIES}.")
    return tuple(out)


def responses(
    model,
    mesh: AbstractMesh,
    *,
    mu,
    temperature=0.0,
    tau=None,
    quantities=None,
    g_factor=2.0,
    degen_tol: float = DEFAULT_DEGEN_TOL,
    chunk_size: int = DEFAULT_CHUNK,
    mu_method: str = "exact",
    interp_spacing: float = 0.125,
    interp_points: int | None = None,
) -> dict[str, Array]:
    r"""Several responses in one pass over ``mesh``: one eigh per k shared by all of them.

    ``quantities``: a tuple of names from :data:`QUANTITIES` (module docstring: formulas, shapes,
    units — the same as the standalone functions), or ``None`` for every quantity the inputs allow
    (the spin ones if the model has spin operators, the extrinsic ones if ``tau`` is given). Only
    what is requested is computed. Returns ``{name: array}`` with the standalone functions' values:
    vectors ``S + (3,)``, tensors α^{ij} (δM^i = α^{ij} E_j) ``S + (3, 3)``, S = broadcast(μ, T)
    (and τ for the extrinsic responses).

    ``mu``, ``temperature`` (energy units, k_B = 1) broadcast against each other. ``tau`` (ħ/E,
    > 0) is required by the extrinsic (relaxation-time) responses and used only by them; they also
    need T > 0. ``g_factor`` (default 2) multiplies the spin responses (S = σ/2 in units of ħ).

    ``mu_method``: ``"exact"`` (Fermi weights at every (k, n, μ), contracted as one GEMM per chunk;
    T ≥ 0) or ``"interpolated"`` (features deposited on an energy grid of spacing
    h ≤ ``interp_spacing`` · min T, cubic-Lagrange weights; T > 0 only; relative error ∝ (h/T)⁴,
    ≈ 1e-6 at the default h = T/8 — see the module docstring and ``tests/test_pipeline.py``).
    ``interp_points`` fixes the grid size G (needed when μ or T are traced, e.g. under an outer
    jit).

    Sources: see the module docstring (seed eqs. 1, 5–10; Xiao et al. 2005,
    doi:10.1103/PhysRevLett.95.137204; Garate & Franz 2010, doi:10.1103/PhysRevLett.104.146802).
    """
    quantities = _resolve(quantities, model, tau)
    if mu_method not in MU_METHODS:
        raise ValueError(f"mu_method must be one of {MU_METHODS}, got {mu_method!r}.")
    model = _check_mesh(model, mesh)
    if set(_SPIN) & set(quantities) and model.spin_operators() is None:
        raise ValueError(
            f"{sorted(set(_SPIN) & set(quantities))} need spin operators, but "
            f"{type(model).__name__} has none "
            "(give `spin=` to TightBinding/from_function, or use a spinful model)."
        )
    extrinsic = bool(set(_EXTRINSIC) & set(quantities))
    interpolated = mu_method == "interpolated"
    if interpolated and is_concrete(temperature) and np.any(np.asarray(temperature) <= 0):
        raise ValueError(
            "mu_method='interpolated' needs temperature > 0 (the Fermi weights are interpolated "
            "on an "
            "energy grid of spacing ~T/8); use mu_method='exact' at T = 0."
        )
    mu, temperature = as_mu_temperature(mu, temperature, fermi_surface=extrinsic or interpolated)
    scale = None
    if extrinsic:
        scale = check_tau(tau, str([q for q in quantities if q in _EXTRINSIC]))
    elif tau is not None:
        raise ValueError("tau is used only by the extrinsic responses; none of them is requested.")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}.")
    chunk_size = min(chunk_size, mesh.size)
    spin = bool(set(_SPIN) & set(quantities))
    groups = _hopping_groups(model)
    # the ½σ-pair split pays from n = 4 on; at n = 2 the sparse gathers were measured faster
    spin_half = "kinetic_spin_intrinsic" in quantities and model.norb > 2
    plan = _Plan(
        quantities=quantities,
        dim=model.dim,
        hoppings=groups,
        spin_sparse=_sparse_spin(model) if spin else None,
        spin_half=_spin_half_pairs(model) if spin_half else None,
        phase_free=groups is not None and _phase_free(model, spin),
    )
    if interpolated:
        if interp_points is None:
            if not (is_concrete(mu) and is_concrete(temperature)):
                raise ValueError(
                    "mu_method='interpolated' under tracing needs interp_points (the grid size)."
                )
            interp_points = grid_points(mu, temperature, interp_spacing)
        if interp_points < 8:
            raise ValueError(f"interp_points must be >= 8, got {interp_points}.")
        sums = _interpolated(
            model, mesh, plan, mu, temperature, degen_tol, chunk_size, int(interp_points)
        )
    else:
        sums = _exact(model, mesh, plan, mu, temperature, degen_tol, chunk_size)
    return _assemble(plan, sums, mu.shape, jnp.asarray(g_factor, dtype=jnp.float64), scale)


def _assemble(plan, sums, shape, g_factor, tau):
    """Place the compact columns into Cartesian vectors/tensors and apply −g, τ and the signs."""
    dim = plan.dim
    vc = np.array(_vector_components(dim), dtype=np.int32)
    fc = np.arange(dim, dtype=np.int32)
    out = {}
    for name, w, sl in plan.slices():
        x = sums[w][:, sl].reshape(shape + (-1,))
        if name in ("orbital_magnetization", "anomalous_hall_conductivity"):
            full = jnp.zeros(shape + (3,)).at[..., vc].set(x)
            full = -full if name == "anomalous_hall_conductivity" else full
            out[name] = out[name] + full if name in out else full
        elif name == "spin_magnetization":
            out[name] = -g_factor * x
        else:
            rows = (
                np.arange(3, dtype=np.int32)
                if name in ("kinetic_spin_extrinsic", "kinetic_spin_intrinsic")
                else vc
            )
            full = (
                jnp.zeros(shape + (3, 3))
                .at[..., rows[:, None], fc[None, :]]
                .set(x.reshape(shape + (len(rows), dim)))
            )
            if name.startswith("kinetic_spin"):
                full = -g_factor * full
            if name in _EXTRINSIC:
                full = tau[..., None, None] * full
            out[name] = full
    return out
