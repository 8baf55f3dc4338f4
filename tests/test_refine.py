"""Adaptive Fermi-surface refinement (qgeo_jax._refine.refine_fermi_surface)."""

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close

from qgeo_jax._bz import ExplicitMesh, integrate, monkhorst_pack
from qgeo_jax._kinetic import kinetic_magnetization
from qgeo_jax._refine import cell_energy_ranges, refine_fermi_surface
from qgeo_jax._responses import orbital_magnetization
from qgeo_jax.models import Haldane, RashbaLattice, from_function

T_HOP = 1.0


def _cosine_band():
    """One band E(k) = −2t(cos kx + cos ky) on the unit square lattice."""
    return from_function(lambda k: jnp.array([[-2 * T_HOP * (jnp.cos(k[0]) + jnp.cos(k[1]))]]), dim=2, lattice=np.eye(2))


def _fermi(e, mu, t):
    return 0.5 * (1 - jnp.tanh((e - mu) / (2 * t)))


def _minus_df(e, mu, t):
    return 1 / (4 * t * jnp.cosh((e - mu) / (2 * t)) ** 2)


def test_weights_exact_and_cells_split():
    model = Haldane()  # non-orthogonal lattice
    mp = monkhorst_pack(model, (12, 12), shift=0.5)
    m = 3
    ref = refine_fermi_surface(model, mp, mu=[0.3, -0.6], temperature=0.05, subdivisions=m)
    assert isinstance(ref, ExplicitMesh)
    assert_close(jnp.sum(ref.weights), 1 / model.cell_volume(), rtol=1e-13)
    w_cell = 1 / (mp.size * float(model.cell_volume()))
    w = np.asarray(ref.weights)
    assert set(np.round(w / w_cell * m**2).astype(int)) <= {1, m**2}
    n_fine = int(np.sum(np.isclose(w, w_cell / m**2)))
    assert n_fine % m**2 == 0 and 0 < n_fine // m**2 < mp.size  # some, not all, cells refined
    assert ref.size == mp.size + n_fine - n_fine // m**2


def test_no_refinement_far_from_bands_and_m1_is_the_coarse_mesh():
    model = RashbaLattice()
    mp = monkhorst_pack(model, (10, 10))
    k_mp, w_mp = mp.all_points()
    for ref in (refine_fermi_surface(model, mp, mu=50.0, temperature=0.01, subdivisions=4),
                refine_fermi_surface(model, mp, mu=-1.0, temperature=0.01, subdivisions=1)):
        order = np.lexsort(np.asarray(ref.points).T)
        order_mp = np.lexsort(np.asarray(k_mp).T)
        assert_close(np.asarray(ref.points)[order], np.asarray(k_mp)[order_mp], rtol=0, atol=1e-13)
        assert_close(np.asarray(ref.weights)[order], np.asarray(w_mp)[order_mp], rtol=1e-14)


def test_cell_ranges_contain_the_true_band_range():
    """Sampled energies inside each cell lie within the cell's (lo, hi) of the selection rule."""
    model = _cosine_band()
    mp = monkhorst_pack(model, (8, 8))
    lo, hi = cell_energy_ranges(model, mp)
    u = (np.arange(5) + 0.5) / 5 - 0.5
    for i in range(8):
        for j in range(8):
            kx, ky = 2 * np.pi * (i + u[:, None]) / 8, 2 * np.pi * (j + u[None, :]) / 8
            e = -2 * (np.cos(kx) + np.cos(ky))
            assert lo[i, j, 0] <= e.min() + 1e-12 and e.max() - 1e-12 <= hi[i, j, 0]


def test_fermi_surface_integral_by_parts_identity():
    """Two routes to the Drude weight of E = −2t(cos kx + cos ky) (integration by parts over the
    periodic BZ): ∫ (∂_x E)² (−f0') = ∫ f0 ∂²_x E. The right side (Fermi sea, smooth) on a fine
    uniform mesh; the left side (Fermi surface, width T) on a refined coarse mesh."""
    model = _cosine_band()
    mu, t = -1.3, 0.02
    sea = lambda k: _fermi(-2 * (jnp.cos(k[0]) + jnp.cos(k[1])), mu, t) * 2 * jnp.cos(k[0])
    surf = lambda k: (2 * jnp.sin(k[0])) ** 2 * _minus_df(-2 * (jnp.cos(k[0]) + jnp.cos(k[1])), mu, t)
    exact = float(integrate(sea, monkhorst_pack(model, (600, 600)), chunk_size=4096))  # converged to ~1e-10
    ref = refine_fermi_surface(model, monkhorst_pack(model, (60, 60)), mu=mu, temperature=t, subdivisions=8)
    got = float(integrate(surf, ref, chunk_size=4096))
    assert_close(got, exact, rtol=3e-6)
    # a uniform mesh with more than twice the points is 10× less accurate (measured: 3e-5 vs 3e-7)
    n_uni = int(np.ceil(np.sqrt(2 * ref.size)))
    uniform = float(integrate(surf, monkhorst_pack(model, (n_uni, n_uni)), chunk_size=4096))
    assert abs(uniform - exact) > 10 * abs(got - exact)


def _edelstein(model, mesh, mu, t):
    return np.asarray(kinetic_magnetization(model, mesh, mu=mu, temperature=t, part="spin", mechanism="extrinsic", tau=1.0))


def test_edelstein_converges_with_fewer_points_than_uniform():
    """Rashba lattice Edelstein response at T = 0.02: the refined mesh reaches the fine-uniform
    result with several times fewer k-points than a uniform mesh of the same error."""
    model = RashbaLattice(t=1.0, alpha=0.5)
    mu, t = -2.0, 0.02
    reference = _edelstein(model, monkhorst_pack(model, (720, 720)), mu, t)  # converged (see bench)
    scale = np.abs(reference).max()
    ref = refine_fermi_surface(model, monkhorst_pack(model, (45, 45)), mu=mu, temperature=t, subdivisions=8)
    err_ref = np.abs(_edelstein(model, ref, mu, t) - reference).max() / scale
    assert err_ref < 1e-3
    # a uniform mesh with 3× the points of the refined one is still less accurate
    n_uniform = int(np.ceil(np.sqrt(3 * ref.size)))
    err_uni = np.abs(_edelstein(model, monkhorst_pack(model, (n_uniform, n_uniform)), mu, t) - reference).max() / scale
    assert err_uni > err_ref, (ref.size, n_uniform**2, err_ref, err_uni)


def test_refined_mesh_works_for_other_responses():
    """It is just a mesh: the Fermi-sea M^O on the refined mesh agrees with a uniform fine mesh."""
    model = Haldane()
    mu = np.array([-0.5, 0.5])
    ref = refine_fermi_surface(model, monkhorst_pack(model, (48, 48)), mu=mu, temperature=0.05, subdivisions=3)
    fine = orbital_magnetization(model, monkhorst_pack(model, (144, 144)), mu=mu, temperature=0.05)
    got = orbital_magnetization(model, ref, mu=mu, temperature=0.05)
    assert_close(got, fine, rtol=1e-3, atol=1e-6)


def test_input_errors():
    model = RashbaLattice()
    mp = monkhorst_pack(model, (8, 8))
    with pytest.raises(ValueError, match="temperature > 0"):
        refine_fermi_surface(model, mp, mu=0.0, temperature=0.0)
    with pytest.raises(ValueError, match="subdivisions"):
        refine_fermi_surface(model, mp, mu=0.0, temperature=0.1, subdivisions=0)
    with pytest.raises(TypeError, match="monkhorst_pack"):
        refine_fermi_surface(model, ExplicitMesh(points=jnp.zeros((1, 2)), weights=jnp.ones(1)), mu=0.0, temperature=0.1)


def test_max_cells_caps_the_refinement():
    model = RashbaLattice()
    mp = monkhorst_pack(model, (20, 20))
    full = refine_fermi_surface(model, mp, mu=-2.0, temperature=0.05, subdivisions=2)
    capped = refine_fermi_surface(model, mp, mu=-2.0, temperature=0.05, subdivisions=2, max_cells=10)
    assert capped.size == mp.size + 10 * 3 < full.size
    assert_close(jnp.sum(capped.weights), 1.0, rtol=1e-13)
