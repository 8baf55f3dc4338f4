r"""Intrinsic (τ⁰) second-order spin response of an insulator vs open-boundary flakes.

The flake route is independent of every k-space construction: the exact ground state of a finite
L×L piece of the lattice model with the potential +e E·(r − r_c) (electron charge −e) and its
spin per area ⟨S⟩(E)/A, differentiated twice in E. Two ways:

* ``jax.hessian`` of :func:`qgeo_jax._realspace.flake_spin_density` (autodiff through the
  degeneracy-safe eigh) — exact, but flakes of a square model have many nearly degenerate levels
  and the second derivative picks up round-off ∝ 1/splitting² when a splitting is just above the
  eigh's degeneracy tolerance (at L = 16 the x↔y symmetric entries differ by 4e-4 relative), so
  it is used at L = 8 and 12 only;
* second-order perturbation theory of the flake's occupied projector in the exact position
  operator (Rayleigh–Schrödinger for the density matrix: [H, P1] = −[V, P0],
  [H, P2] = −[V, P1] off the occupied/empty blocks, P0P2P0 = −P0P1²P0, Q0P2Q0 = Q0P1²Q0),
  whose only denominators are across the flake's gap — robust at every size.

The two agree to round-off where both apply. The edges contribute ∝ 1/L (measured:
L·(bulk − flake) = 0.0183, 0.0184, 0.0184, 0.0184 at L = 8, 12, 16, 20 for χ^{zxx}), so a fit
a + b/L + c/L² extrapolates to the bulk k-space value.
"""

import jax
import jax.numpy as jnp
import numpy as np
from test_nonlinear_kinetic import altermagnet

from qgeo_jax._bz import monkhorst_pack
from qgeo_jax._nonlinear_kinetic import nonlinear_kinetic_magnetization
from qgeo_jax._realspace import build_flake, flake_spin_density


def _second_order_projector(flake, mu=0.0):
    """Eigenvectors U and the second-order occupied projector P2^{ab} in their basis,
    P(E) = P0 + E_a P1^a + E_aE_b P2^{ab} (symmetric in a, b), by density-matrix perturbation theory
    of the flake in the potential +e E·(r − r_c)."""
    h = np.asarray(flake.hamiltonian)
    energies, u = np.linalg.eigh(h)
    occ = energies < mu
    off = occ[:, None] != occ[None, :]
    diff = energies[:, None] - energies[None, :]
    inv = np.where(off, 1.0 / np.where(off, diff, 1.0), 0.0)
    r = np.asarray(flake.positions - flake.center)[:, :2]
    v = np.stack([u.conj().T @ (r[:, a, None] * u) for a in range(2)])  # U† x_a U
    p0 = np.diag(occ.astype(float))
    p1 = np.stack([-(va @ p0 - p0 @ va) * inv for va in v])
    same = np.where(occ[:, None] & occ[None, :], -1.0, 0.0) + np.where(
        ~occ[:, None] & ~occ[None, :], 1.0, 0.0
    )
    p2 = np.empty((2, 2) + h.shape, dtype=complex)
    for a in range(2):
        for b in range(2):
            comm = v[b] @ p1[a] - p1[a] @ v[b]
            p2[a, b] = -comm * inv + same * (p1[a] @ p1[b])
    return u, 0.5 * (p2 + p2.transpose(1, 0, 2, 3))


def _flake_second_order_spin(flake, mu=0.0):
    """χ^{cab} of ⟨S⟩ per area, δ⟨S^c⟩/A = χ^{cab}E_aE_b, by density-matrix perturbation theory."""
    u, p2 = _second_order_projector(flake, mu)
    s_orb = np.asarray(flake.orbital_spin)
    ub = u.reshape(flake.n_cells, flake.norb, -1)
    n = u.shape[0]
    su = np.einsum("cij,xjn->cxin", s_orb, ub).reshape(3, n, n)  # (1 ⊗ S) U
    s = u.conj().T[None] @ su  # U† (1 ⊗ S) U
    chi = np.real(np.einsum("cmn,abnm->cab", s, p2))
    return chi / float(flake.area)


def test_intrinsic_spin_matches_flakes():
    m = altermagnet(t=0.15)  # gap 0.6 around μ = 0 (an insulator; its d-wave texture is P-even)
    bulk = nonlinear_kinetic_magnetization(
        m, monkhorst_pack(m, (32, 32)), mu=0.0, temperature=0.0, part="spin", mechanism="intrinsic"
    )
    bulk = np.asarray(bulk)[:, :2, :2] / -2.0  # χ of ⟨S⟩ (g = 2 removed)
    scale = np.abs(bulk).max()
    assert scale > 1e-2

    # route 1 (autodiff) == route 2 (perturbation theory) on small flakes
    for size in (8, 12):
        flake = build_flake(m, (size, size))
        density = lambda e, fl=flake: flake_spin_density(fl, 0.0, field=e)
        hess = 0.5 * np.asarray(jax.jit(jax.hessian(density))(jnp.zeros(2)))
        pt = _flake_second_order_spin(flake)
        assert np.abs(hess - pt).max() < 1e-7 * scale  # measured 1.3e-9 (L = 8), 2e-8 (L = 12)

    sizes = (12, 16, 20)
    values = [_flake_second_order_spin(build_flake(m, (size, size))) for size in sizes]
    # the raw flakes are off by O(1/L) (8 % at L = 12); the extrapolation must do much better
    assert np.abs(values[0] - bulk).max() > 5e-2 * scale
    inv = 1.0 / np.asarray(sizes, dtype=float)
    design = np.stack([np.ones_like(inv), inv, inv**2], axis=1)
    coef, *_ = np.linalg.lstsq(design, np.stack(values).reshape(len(sizes), -1), rcond=None)
    err = np.abs(coef[0].reshape(3, 2, 2) - bulk).max() / scale
    assert err < 1e-8, err  # measured 7e-13 (L = 12, 16, 20)
