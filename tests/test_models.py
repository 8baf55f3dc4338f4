"""Models: validation errors, the hopping-table model against closed-form Haldane, from_function,
lattice/continuum mesh errors, and the Rashba lattice → continuum limit.

Closed forms:
* Haldane, PRL 61, 2015 (1988), doi:10.1103/PhysRevLett.61.2015, written as a hopping table with
  the package convention H_ij = Σ_R t e^{ik·(R + τ_j − τ_i)} must equal the built-in model.
* Cell vs positions convention: H^cell(k) = D(k)† H^pos(k) D(k), D = diag(e^{ik·τ}) (unitary, same
  spectrum).
* RashbaLattice with onsite ε_0 = 4t → Rashba with 1/(2m*) = t: H_lat − H_cont = O(k³)
  (α(sin k − k) ≈ −αk³/6) + O(k⁴) (t(2 − 2cos k − k²) ≈ −tk⁴/12).
* Reciprocal vectors a_i·b_j = 2π δ_ij; honeycomb cell area 3√3/2 (NN distance 1).
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close

import qgeo_jax._bz as bz
from qgeo_jax._geometry import band_geometry, spin_expectation
from qgeo_jax._responses import orbital_magnetization, spin_magnetization
from qgeo_jax._spectrum import spectrum
from qgeo_jax.models import (
    PAULI,
    Haldane,
    MassiveDirac,
    QiWuZhang,
    Rashba,
    RashbaLattice,
    TightBinding,
    from_function,
)

SQ3 = np.sqrt(3.0)
HONEY = np.array([[SQ3, 0.0], [SQ3 / 2, 1.5]])


def haldane_table(t1, t2, phi, delta, convention="positions"):
    hops = [(t1, 0, 1, (0, 0)), (t1, 0, 1, (-1, 0)), (t1, 0, 1, (0, -1))]
    for R in [(1, 0), (-1, 1), (0, -1)]:
        hops += [(t2 * np.exp(1j * phi), 0, 0, R), (t2 * np.exp(-1j * phi), 1, 1, R)]
    return TightBinding(
        HONEY, [[0, 0], [1 / 3, 1 / 3]], [delta, -delta], hops, convention=convention
    )


# --- TightBinding --------------------------------------------------------------------------------
def test_tight_binding_validation_errors():
    lat, pos, ons = np.eye(2), [[0, 0], [0.5, 0.5]], [0.0, 0.0]
    ok = [(1.0, 0, 1, (0, 0))]
    TightBinding(lat, pos, ons, ok)
    cases = [
        (dict(hoppings=[(1.0, 0, 1, (0, 0)), (0.5, 0, 1, (0, 0))]), "same bond"),
        (
            dict(hoppings=[(1.0, 0, 1, (1, 0)), (0.5, 1, 0, (-1, 0))]),
            "same bond",
        ),  # Hermitian partner
        (dict(hoppings=[(1.0, 0, 0, (0, 0))]), "on-site"),
        (dict(hoppings=[(1.0, 0, 1)]), "expected \\(t, i, j, R\\)"),
        (dict(hoppings=[(1.0, 0, 1, (0, 0, 0))]), "lattice is 2D"),
        (dict(hoppings=[(1.0, 0, 2, (0, 0))]), "there are 2"),
        (dict(hoppings=[]), "empty"),
        (dict(onsite=[0.0, 0.0, 1.0]), "onsite has 3 entries"),
        (dict(lattice=np.ones((2, 3))), "lattice must be"),
        (dict(lattice=np.eye(4)), "lattice must be"),
        (dict(spin=np.zeros((3, 3, 3))), "spin operators must have shape"),
        (dict(convention="wannier"), "convention must be"),
    ]
    for change, msg in cases:
        kw = dict(lattice=lat, positions=pos, onsite=ons, hoppings=ok)
        kw.update(change)
        extra = {k: kw.pop(k) for k in ("spin", "convention") if k in kw}
        with pytest.raises(ValueError, match=msg):
            TightBinding(kw["lattice"], kw["positions"], kw["onsite"], kw["hoppings"], **extra)


@pytest.mark.parametrize("params", [(-1.0, 0.15, np.pi / 2, 0.2), (0.7, -0.3, 0.4, -0.5)])
def test_tight_binding_equals_closed_form_haldane(rng, params):
    t1, t2, phi, delta = params
    closed = Haldane(t1=t1, t2=t2, phi=phi, delta=delta)
    table = haldane_table(*params)
    ks = jnp.asarray(rng.uniform(-4, 4, size=(32, 2)))
    h_closed = jax.vmap(closed.hamiltonian)(ks)
    h_table = jax.vmap(table.hamiltonian)(ks)
    assert_close(h_table, h_closed, rtol=0, atol=1e-14)
    assert_close(table.positions(), closed.positions(), rtol=0, atol=1e-15)
    assert_close(table.reciprocal(), closed.reciprocal(), rtol=1e-15)
    geo = jax.jit(jax.vmap(lambda m, k: band_geometry(m, k), in_axes=(None, 0)))
    g1, g2 = geo(closed, ks), geo(table, ks)
    for field in ("berry_curvature", "quantum_metric", "orbital_moment", "velocity"):
        assert_close(
            getattr(g2, field),
            getattr(g1, field),
            rtol=0,
            atol=1e-12 * np.max(np.abs(np.asarray(getattr(g1, field)))),
            what=field,
        )


def test_tight_binding_cell_convention(rng):
    pos = table_pos = haldane_table(-1.0, 0.2, 0.3, 0.1)
    cell = haldane_table(-1.0, 0.2, 0.3, 0.1, convention="cell")
    tau = np.asarray(table_pos.positions())
    for k in rng.uniform(-3, 3, size=(5, 2)):
        d = np.diag(np.exp(1j * tau @ k))
        h_pos = np.asarray(pos.hamiltonian(jnp.asarray(k)))
        h_cell = np.asarray(cell.hamiltonian(jnp.asarray(k)))
        assert_close(h_cell, d @ h_pos @ d.conj().T, rtol=0, atol=1e-14)
        # the cell convention is periodic in k: H(k + b) = H(k)
        b = np.asarray(cell.reciprocal())[0]
        assert_close(cell.hamiltonian(jnp.asarray(k + b)), h_cell, rtol=0, atol=1e-13)


def test_tight_binding_parameters_are_differentiable():
    """Hopping amplitudes are array fields: ∂E/∂t by autodiff equals the Hellmann–Feynman value."""
    model = haldane_table(-1.0, 0.15, np.pi / 2, 0.2)
    k = jnp.array([0.4, -0.2])
    grad = eqx.filter_jit(eqx.filter_grad(lambda m: spectrum(m, k).energies[0]))(model)
    _, u = np.linalg.eigh(np.asarray(model.hamiltonian(k)))
    # H depends on the complex hopping t through t·phase + c.c.; for the real NN bond #0 (R = 0):
    dh = np.zeros((2, 2), complex)
    tau = np.asarray(model.positions())
    dh[0, 1] = np.exp(1j * (tau[1] - tau[0]) @ np.asarray(k))
    dh = dh + dh.conj().T
    expected = np.real(u[:, 0].conj() @ dh @ u[:, 0])
    # JAX's gradient w.r.t. a complex parameter is the conjugate Wirtinger-type ∂/∂Re t − i ∂/∂Im t
    assert_close(np.real(np.asarray(grad.hopping)[0]), expected, rtol=1e-12)


# --- from_function -------------------------------------------------------------------------------
def test_from_function_checks():
    good = lambda k: jnp.sin(k[0]) * jnp.asarray(PAULI[0]) + jnp.cos(k[1]) * jnp.asarray(PAULI[2])
    model = from_function(good, dim=2, lattice=np.eye(2))
    assert model.norb == 2 and model.is_lattice
    with pytest.raises(ValueError, match="not Hermitian"):
        from_function(
            lambda k: jnp.array([[0.0, 1.0], [0.0, 0.0]]) * k[0], dim=2, lattice=np.eye(2)
        )
    with pytest.raises(ValueError, match="no params were given"):
        from_function(lambda k, p: good(k), dim=2, lattice=np.eye(2))
    with pytest.raises(ValueError, match="takes only k"):
        from_function(good, {"a": 1.0}, dim=2, lattice=np.eye(2))
    with pytest.raises(ValueError, match="needs k_cutoff"):
        from_function(good, dim=2)
    with pytest.raises(ValueError, match="dim must be 1, 2 or 3"):
        from_function(good, dim=4, lattice=np.eye(4))
    with pytest.raises(ValueError, match="lattice must have shape"):
        from_function(good, dim=2, lattice=np.eye(3))
    with pytest.raises(ValueError, match="square matrix"):
        from_function(lambda k: jnp.ones((2, 3)) * k[0], dim=2, lattice=np.eye(2))
    with pytest.raises(ValueError, match="NaN or inf"):
        from_function(lambda k: good(k) * jnp.nan, dim=2, lattice=np.eye(2))
    with pytest.raises(ValueError, match="spin operators have shape"):
        from_function(good, dim=2, lattice=np.eye(2), spin=np.zeros((3, 3, 3)))
    # params version: the float leaves are differentiable
    with_params = from_function(lambda k, p: p["m"] * good(k), {"m": 2.0}, dim=2, lattice=np.eye(2))
    k = jnp.array([0.3, 0.1])
    de = jax.grad(lambda m: spectrum(m, k).energies[1])(with_params).params["m"]
    assert_close(de, float(spectrum(with_params, k).energies[1]) / 2.0, rtol=1e-12)


def test_function_model_matches_builtin():
    """from_function(QWZ formula) reproduces the built-in QiWuZhang exactly."""
    u, t = 0.8, 1.3

    def h(k, p):
        s, c = jnp.sin(k), jnp.cos(k)
        return (
            p["t"] * (s[0] * PAULI[0] + s[1] * PAULI[1])
            + (p["u"] + p["t"] * (c[0] + c[1])) * PAULI[2]
        )

    fm = from_function(h, {"u": u, "t": t}, dim=2, lattice=np.eye(2))
    builtin = QiWuZhang(u=u, t=t)
    ks = jnp.asarray(np.random.default_rng(1).uniform(-3, 3, size=(8, 2)))
    assert_close(
        jax.vmap(fm.hamiltonian)(ks), jax.vmap(builtin.hamiltonian)(ks), rtol=0, atol=1e-15
    )


# --- meshes vs model kinds -----------------------------------------------------------------------
def test_mesh_kind_errors():
    lattice_model, continuum_model = Haldane(), MassiveDirac()
    with pytest.raises(ValueError, match="continuum model"):
        bz.monkhorst_pack(continuum_model, (4, 4))
    with pytest.raises(ValueError, match="lattice model"):
        bz.continuum_mesh(lattice_model, k_max=1.0)
    with pytest.raises(ValueError, match="has 3 axes"):
        bz.monkhorst_pack(lattice_model, (4, 4, 4))
    with pytest.raises(ValueError, match="positive integers"):
        bz.monkhorst_pack(lattice_model, (4, 0))
    with pytest.raises(ValueError, match="unknown continuum mesh kind"):
        bz.continuum_mesh(continuum_model, kind="hexagon")
    with pytest.raises(ValueError, match="positive k_max"):
        bz.continuum_mesh(continuum_model, k_max=-1.0)
    three_d = from_function(lambda k: jnp.diag(k).astype(complex), dim=3, k_cutoff=1.0)
    with pytest.raises(ValueError, match="polar mesh is 2D"):
        bz.continuum_mesh(three_d)
    assert bz.continuum_mesh(three_d, kind="box", n=4).size == 64
    # a mesh of the wrong dimension is rejected by the responses
    with pytest.raises(ValueError, match="the mesh is 3D"):
        orbital_magnetization(continuum_model, bz.continuum_mesh(three_d, kind="box", n=4), mu=0.0)
    with pytest.raises(ValueError, match="no reciprocal lattice"):
        continuum_model.reciprocal()
    with pytest.raises(ValueError, match="no unit cell"):
        continuum_model.cell_volume()


def test_spin_required_errors():
    model = QiWuZhang()
    with pytest.raises(ValueError, match="needs spin operators"):
        spin_magnetization(model, bz.monkhorst_pack(model, (4, 4)), mu=0.0)
    with pytest.raises(ValueError, match="needs spin operators"):
        spin_expectation(spectrum(model, jnp.zeros(2)))
    assert band_geometry(model, jnp.zeros(2)).spin is None


def test_massive_dirac_rejects_bad_valley():
    with pytest.raises(ValueError, match="valley must be"):
        MassiveDirac(valley=0)


def test_lattice_geometry():
    for model, area in [(Haldane(), 3 * SQ3 / 2), (QiWuZhang(), 1.0), (RashbaLattice(), 1.0)]:
        a, b = np.asarray(model.lattice), np.asarray(model.reciprocal())
        assert_close(a @ b.T, 2 * np.pi * np.eye(2), rtol=0, atol=1e-14)
        assert_close(model.cell_volume(), area, rtol=1e-15)
        assert model.norb == 2 and model.dim == 2
    # the built-in Haldane H is periodic up to the positions gauge: H(k+b) = D(b)† H(k) D(b)
    model = Haldane(phi=0.4)
    tau = np.asarray(model.positions())
    k = np.array([0.3, -0.8])
    for b in np.asarray(model.reciprocal()):
        d = np.diag(np.exp(1j * tau @ b))
        assert_close(
            model.hamiltonian(jnp.asarray(k + b)),
            d.conj().T @ np.asarray(model.hamiltonian(jnp.asarray(k))) @ d,
            rtol=0,
            atol=1e-13,
        )


# --- Rashba: lattice → continuum -----------------------------------------------------------------
def test_rashba_lattice_approaches_continuum_near_gamma():
    t, alpha, exchange = 0.8, 0.35, (0.02, -0.03, 0.05)
    lat = RashbaLattice(t=t, alpha=alpha, exchange=exchange, onsite=4 * t)
    cont = Rashba(mass=1 / (2 * t), alpha=alpha, exchange=exchange)
    direction = np.array([0.6, 0.8])
    errs = []
    for q in (0.1, 0.05, 0.025):
        k = jnp.asarray(q * direction)
        errs.append(
            np.max(np.abs(np.asarray(lat.hamiltonian(k)) - np.asarray(cont.hamiltonian(k))))
        )
    # leading error α k³/6 (third order): halving k divides it by ≈ 8
    assert 7.0 < errs[0] / errs[1] < 9.0 and 7.0 < errs[1] / errs[2] < 9.0, errs
    assert_close(errs[0], alpha * 0.1**3 / 6 * np.max(np.abs(direction**3)), rtol=0.1)
    # spin matrices agree; band quantities agree to O(k²) relative at small k
    assert_close(lat.spin_operators(), cont.spin_operators(), rtol=0, atol=0)
    k = jnp.asarray(0.02 * direction)
    g_lat, g_cont = band_geometry(lat, k), band_geometry(cont, k)
    for field in ("energies", "spin", "berry_curvature", "orbital_moment"):
        a, b = np.asarray(getattr(g_lat, field)), np.asarray(getattr(g_cont, field))
        assert np.max(np.abs(a - b)) < 1e-3 * np.max(np.abs(b)), field
