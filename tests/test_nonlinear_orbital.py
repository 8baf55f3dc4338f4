r"""Intrinsic (τ⁰) second-order orbital magnetization of insulators, χ^{ijk} = ½ ∂α_{jk}/∂B_i.

Routes:

* the k-space formula (magnetic Moyal product to first order in B,
  :mod:`qgeo_jax._nonlinear_orbital`);
* its two ingredients against the package's independent formulas: the same first-order magnetic
  projector gives −∂F/∂B = M^O of the modern theory (:func:`orbital_magnetization`), and the
  polarizability at B = 0 is −Σ_occ∫G (Berry-connection polarizability);
* open flakes: the exact ground state of an L×L piece of the lattice in the potential
  +e E·(r − r_c), its moment −(e/2)⟨r × v⟩ per area to second order in E by density-matrix
  perturbation theory, extrapolated in 1/L (no Bloch states, no B field, no Maxwell relation).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close
from test_nonlinear_kinetic_flake import _second_order_projector

from qgeo_jax import models
from qgeo_jax._bz import continuum_mesh, integrate, monkhorst_pack
from qgeo_jax._chern import chern_number
from qgeo_jax._nonlinear_hall import berry_connection_polarizability
from qgeo_jax._nonlinear_kinetic import nonlinear_kinetic_integrand, nonlinear_kinetic_magnetization
from qgeo_jax._nonlinear_orbital import grand_potential_slope, intrinsic_orbital_density
from qgeo_jax._realspace import _angular_operator, build_flake, real_space_hoppings
from qgeo_jax._responses import orbital_magnetization
from qgeo_jax._spectrum import spectrum
from qgeo_jax.models import from_function

# Trivial insulator with broken time reversal; the gap (≈ 1.86) contains μ = −0.4.
TRIVIAL = dict(t1=-1.0, t2=0.25, phi=1.0, delta=2.0)
KW = dict(part="orbital", mechanism="intrinsic", temperature=0.0)


def _chi(model, shape, mu=-0.4):
    return nonlinear_kinetic_magnetization(model, monkhorst_pack(model, shape), mu=mu, **KW)


@pytest.mark.parametrize(
    "params, mu",
    [(TRIVIAL, -0.4), (dict(t1=-1.0, t2=0.15, phi=0.7, delta=0.2), -0.3)],  # trivial, Chern
)
def test_magnetic_projector_gives_modern_theory_magnetization(params, mu):
    """Σ_k Re tr[(H − μ) P^θ] = M^O (modern theory): fixes the sign and size of θ = −eB."""
    m = models.Haldane(**params)
    mesh = monkhorst_pack(m, (16, 16))  # a pointwise identity: any mesh
    slope = jax.jit(lambda: integrate(lambda k: grand_potential_slope(m, k, mu), mesh))()
    ref = orbital_magnetization(m, mesh, mu=mu, temperature=0.0)
    assert abs(float(ref[2])) > 1e-3
    assert_close(slope, ref, rtol=1e-10, atol=1e-14)


def _random_3d(seed=0):
    """Three bands on three sites of a cubic cell, complex hoppings (no T, no P); a gap between the
    lowest two bands."""
    rng = np.random.default_rng(seed)
    mats = rng.normal(size=(5, 3, 3)) + 1j * rng.normal(size=(5, 3, 3))
    mats = jnp.asarray(mats + np.conj(np.swapaxes(mats, -1, -2))) * 0.12
    tau = jnp.asarray(rng.uniform(-0.3, 0.3, size=(3, 3)))

    def h(k, p):
        s, c = jnp.sin(k), jnp.cos(k)
        x = (
            p["gap"] * jnp.diag(jnp.array([-1.0, 0.2, 1.2]))
            + (s[0] + 0.4 * c[1]) * mats[0]
            + (s[1] + 0.3 * c[2]) * mats[1]
            + (s[2] + 0.5 * c[0]) * mats[2]
            + jnp.sin(k[0] - k[1] + k[2]) * mats[3]
            + jnp.cos(k[1] + 2 * k[2]) * mats[4]
        )
        phase = jnp.exp(1j * (tau @ k))  # orbital positions inside the Bloch phases
        return jnp.conj(phase)[:, None] * x * phase[None, :]

    return from_function(h, dict(gap=1.6), dim=3, lattice=np.eye(3), positions=np.asarray(tau))


def test_three_dimensional_ingredients():
    """All three components of the magnetic projector (ε_{icd}) and the polarizability."""
    m = _random_3d()
    mesh = monkhorst_pack(m, (4, 4, 4))  # pointwise identities: any mesh
    mu = -0.8  # the lowest band spans [−2.74, −1.16], the next [−0.38, 0.90]
    slope = jax.jit(lambda: integrate(lambda k: grand_potential_slope(m, k, mu), mesh))()
    ref = orbital_magnetization(m, mesh, mu=mu, temperature=0.0)
    assert np.abs(ref).min() > 5e-5
    assert_close(slope, ref, rtol=1e-10, atol=1e-14)

    def per_k(k):
        alpha, _, _ = intrinsic_orbital_density(m, k, mu)
        g = berry_connection_polarizability(spectrum(m, k))[0]  # lowest band filled
        return alpha, g

    alpha, g = jax.jit(lambda: integrate(per_k, mesh))()
    assert_close(alpha, -g, rtol=1e-10, atol=1e-14)
    assert np.abs(alpha).max() > 1e-2


@pytest.mark.parametrize(
    "sizes, tol",
    [
        ((12, 16, 20), 5e-5),  # measured 1.2e-5
        pytest.param((16, 20, 24), 1e-6, marks=pytest.mark.slow),  # measured 1.5e-7
    ],
)
def test_matches_open_flakes(sizes, tol):
    """k-space χ^{zab} = 1/L-extrapolated flakes (independent route, exact quantum mechanics)."""
    m = models.Haldane(**TRIVIAL)
    bulk = np.asarray(_chi(m, (32, 32)))[2, :2, :2]  # converged to 2e-11
    scale = np.abs(bulk).max()
    assert scale > 1e-3 and abs(bulk[0, 1]) < 1e-12 * scale  # C3: isotropic
    values = []
    for size in sizes:
        flake = build_flake(m, (size, size))
        u, p2 = _second_order_projector(flake, mu=-0.4)
        moment = np.asarray(_angular_operator(flake, flake.hamiltonian))[0]
        band = u.conj().T @ moment @ u
        values.append(-0.5 * np.real(np.einsum("mn,abnm->ab", band, p2)) / float(flake.area))
    assert np.abs(values[-1] - bulk).max() > 0.1 * scale  # raw flakes: 16-20 % off at L = 20-24
    inv = 1.0 / np.asarray(sizes, dtype=float)
    design = np.stack([np.ones_like(inv), inv, inv**2], axis=1)
    coef = np.linalg.solve(design, np.stack(values).reshape(len(sizes), -1))[0]
    err = np.abs(coef.reshape(2, 2) - bulk).max() / scale
    assert err < tol, err


def _rotated(model2d, height=1.7):
    """The 2D model in the (y, z) plane of a 3D crystal stacked along x without hopping."""
    a = np.asarray(model2d.lattice)
    lattice = np.zeros((3, 3))
    lattice[0, 1:], lattice[1, 1:], lattice[2, 0] = a[0], a[1], height
    pos = np.zeros((2, 3))
    pos[:, 1:] = np.asarray(model2d.positions())
    return from_function(
        lambda k, p: model2d.hamiltonian(k[1:]), {}, dim=3, lattice=lattice, positions=pos
    )


@pytest.mark.slow  # 15 s
def test_in_plane_components_by_relabelling():
    """A cyclic relabelling (x, y, z) → (y, z, x) of a layered crystal maps χ^{zxx} of the layer to
    χ^{xyy}/c of the 3D crystal (c = layer spacing): checks the i = x bracket of 3D models."""
    layer = models.Haldane(**TRIVIAL)
    chi2 = np.asarray(_chi(layer, (12, 12)))
    chi3 = np.asarray(_chi(_rotated(layer), (12, 12, 1)))
    assert_close(chi3[0, 1:, 1:], chi2[2, :2, :2] / 1.7, rtol=1e-10, atol=1e-15)
    assert np.abs(chi3[1:]).max() < 1e-15 and np.abs(chi3[0, 0]).max() < 1e-15


def test_symmetry_zero_and_integrand():
    """Time reversal (φ = 0, real on-site terms) kills the τ⁰ orbital term; the per-k integrand
    summed with the mesh weights is the response, for every μ of a batch."""
    m = models.Haldane(**TRIVIAL)
    mesh_t = monkhorst_pack(m, (6, 6))
    mus = jnp.array([-0.4, -0.2])
    chi_t = nonlinear_kinetic_magnetization(
        models.Haldane(**dict(TRIVIAL, phi=0.0)), mesh_t, mu=mus, **KW
    )  # same shapes as below: one compilation
    assert np.abs(chi_t).max() < 1e-15
    chi = nonlinear_kinetic_magnetization(m, mesh_t, mu=mus, **KW)
    assert chi.shape == (2, 3, 3, 3)
    assert_close(chi[0], chi[1], rtol=1e-12)  # same gap, same filled band: same response
    dens = integrate(
        lambda k: nonlinear_kinetic_integrand(
            m, k, mu=mus, temperature=0.0, part="orbital", mechanism="intrinsic"
        ),
        mesh_t,
    )
    assert_close(dens, chi, rtol=1e-12, atol=1e-16)


def test_gradient_matches_central_differences():
    def chi_of(delta):
        m = models.Haldane(**dict(TRIVIAL, delta=delta))
        return _chi(m, (8, 8))[2, 0, 0]

    grad = jax.grad(chi_of)(2.0)
    h = 1e-4
    fd = (chi_of(2.0 + h) - chi_of(2.0 - h)) / (2 * h)
    assert abs(float(fd)) > 1e-4
    assert_close(grad, fd, rtol=1e-6)


def test_clear_errors():
    m = models.Haldane(**TRIVIAL)
    mesh = monkhorst_pack(m, (8, 8))
    with pytest.raises(ValueError, match="insulators only"):
        nonlinear_kinetic_magnetization(m, mesh, mu=1.5, **KW)  # μ in the upper band
    with pytest.raises(ValueError, match="temperature=0"):
        nonlinear_kinetic_magnetization(m, mesh, mu=-0.4, **dict(KW, temperature=0.01))
    dirac = models.MassiveDirac()
    with pytest.raises(ValueError, match="Monkhorst"):
        nonlinear_kinetic_magnetization(dirac, continuum_mesh(dirac, n=(8, 8)), mu=0.0, **KW)
    with pytest.raises(ValueError, match="relaxation time"):
        nonlinear_kinetic_magnetization(m, mesh, mu=-0.4, tau=1.0, **KW)


@pytest.mark.slow  # 25 s
def test_rotation_covariance_3d():
    """Rotating a 3D crystal (H'(k) = H(Rᵀk), lattice and positions rotated) rotates χ as an axial
    vector ⊗ two polar vectors, χ' = R⊗R⊗R χ (proper R): every ε_{icd} bracket and index."""
    m = _random_3d()
    rng = np.random.default_rng(7)
    rot, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    rot *= np.sign(np.linalg.det(rot))
    lattice = np.asarray(m.lattice) @ rot.T
    pos = np.asarray(m.positions()) @ rot.T
    rotated = from_function(
        lambda k, p: m.hamiltonian(jnp.asarray(rot.T) @ k),
        {},
        dim=3,
        lattice=lattice,
        positions=pos,
    )
    chi = np.asarray(_chi(m, (6, 6, 6), mu=-0.8))
    chi_r = np.asarray(_chi(rotated, (6, 6, 6), mu=-0.8))
    expected = np.einsum("ia,jb,kc,abc->ijk", rot, rot, rot, chi)
    assert np.abs(chi).max() > 1e-4
    assert_close(chi_r, expected, rtol=1e-9, atol=1e-12 * np.abs(chi).max())


@pytest.mark.slow  # 50 s (compiles the gradient twice)
def test_exactly_degenerate_bands():
    """Two identical copies of a model (every band exactly doubly degenerate, the degenerate
    eigenvectors arbitrary): χ and its parameter gradient are exactly twice the single copy's."""

    def doubled(delta):
        base = models.Haldane(**dict(TRIVIAL, delta=delta))
        return from_function(
            lambda k, p: jnp.kron(base.hamiltonian(k), jnp.eye(2)),
            {},
            dim=2,
            lattice=np.asarray(base.lattice),
            positions=np.repeat(np.asarray(base.positions()), 2, 0),
        )

    single = lambda d: _chi(models.Haldane(**dict(TRIVIAL, delta=d)), (12, 12))[2, 0, 0]
    double = lambda d: _chi(doubled(d), (12, 12))[2, 0, 0]
    assert_close(double(2.0), 2 * single(2.0), rtol=1e-10)
    g1, g2 = jax.grad(single)(2.0), jax.grad(double)(2.0)
    assert np.isfinite(float(g2))
    assert_close(g2, 2 * g1, rtol=1e-8)


# --- third route: magnetic supercells (Peierls phases, a real B field, no Moyal product) ----------
def _hofstadter(model, q):
    """Magnetic supercell of q cells along x at flux 2π/q per cell of a square-lattice model whose
    orbitals sit on y = 0 (Landau gauge A = (0, Bx, 0); hopping r' → r gets e^{−i∫A·dl}, electron
    charge −e; the gauge function of a translation by q cells is e^{2πi y} = 1 on every site).
    Returns the supercell model (positions convention) and B."""
    hop = real_space_hoppings(model)
    vecs, mats, tau = (np.asarray(x) for x in (hop.vectors, hop.matrices, hop.positions))
    assert np.allclose(np.asarray(hop.lattice), np.eye(2)) and np.allclose(tau[:, 1], 0)
    n, field = tau.shape[0], 2 * np.pi / q
    rows, cols, amps, bonds = [], [], [], []
    for (rx, ry), t in zip(vecs, mats, strict=True):
        for c in range(q):
            for i, j in zip(*np.nonzero(t), strict=True):
                x, xs = c + tau[i, 0], c + rx + tau[j, 0]  # target and source x
                rows.append(c * n + i)
                cols.append(((c + rx) % q) * n + j)
                amps.append(t[i, j] * np.exp(0.5j * field * (x + xs) * ry))
                bonds.append((xs - x, ry))
    rows, cols, amps, bonds = map(np.asarray, (rows, cols, amps, bonds))
    size = q * n

    def h(k, p):
        return jnp.zeros((size, size), complex).at[rows, cols].add(amps * jnp.exp(1j * (bonds @ k)))

    pos = np.stack([np.repeat(np.arange(q), n) + np.tile(tau[:, 0], q), np.zeros(size)], axis=1)
    return from_function(h, {}, dim=2, lattice=np.diag([float(q), 1.0]), positions=pos), field


def _polarizability(model, mu, shape):
    """α = −Σ_occ ∫ G (static electronic polarizability per area), from band quantities only."""

    def per_k(k):
        spec = spectrum(model, k)
        occ = (spec.energies < mu).astype(jnp.float64)
        return -jnp.einsum("n,nab->ab", occ, berry_connection_polarizability(spec))

    return np.asarray(jax.jit(lambda: integrate(per_k, monkhorst_pack(model, shape)))())[:2, :2]


def _chern_model():
    """QWZ (C = −1 at u = 1) plus a dispersive identity term that breaks its χ = 0 symmetry."""
    pauli = jnp.asarray(models.PAULI)

    def h(k, p):
        s, c = jnp.sin(k), jnp.cos(k)
        return (
            s[0] * pauli[0]
            + s[1] * pauli[1]
            + (p["u"] + c[0] + c[1]) * pauli[2]
            + (0.3 * c[0] + 0.25 * jnp.sin(k[0] + k[1])) * jnp.eye(2)
        )

    return from_function(h, dict(u=1.0), dim=2, lattice=np.eye(2), positions=np.zeros((2, 2)))


@pytest.mark.slow  # 25 s; with cells (20, 30, 40) it takes 15 s and agrees to 6e-3
@pytest.mark.parametrize("cells, rtol", [((30, 40, 60, 80, 120), 2e-4)])  # measured 4e-5
def test_chern_insulator_matches_magnetic_supercells(cells, rtol):
    """χ = ½ ∂α/∂B of a Chern insulator (flakes have metallic edges there) against α(B) of
    magnetic supercells at flux 1/q per cell, fitted by a polynomial in B: a real field and Peierls
    phases instead of the Moyal product, and the Maxwell relation itself."""
    m = _chern_model()
    mu = -0.075  # mid-gap (gap 1.05)
    assert abs(float(chern_number(m, monkhorst_pack(m, (32, 32)), [0])) + 1) < 1e-6
    chi = np.asarray(_chi(m, (32, 32), mu=mu))[2, :2, :2]  # converged to 1e-9
    a0 = _polarizability(m, mu, (32, 32))
    fields, slopes = [], []
    for q in cells:
        sc, field = _hofstadter(m, q)
        fields.append(field)
        slopes.append((_polarizability(sc, mu, (2, 32)) - a0) / field)
    fields = np.asarray(fields)
    design = np.stack([fields**p for p in range(len(cells) - 1)], axis=1)  # (α − α0)/B vs B
    coef = np.linalg.lstsq(design, np.stack(slopes).reshape(len(cells), -1), rcond=None)[0][0]
    diag = np.diag(coef.reshape(2, 2))
    assert_close(0.5 * diag, np.diag(chi), rtol=rtol)
    assert np.abs(np.diag(chi)).min() > 3e-3
