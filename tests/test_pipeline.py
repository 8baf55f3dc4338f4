"""The fused response pipeline (qgeo_jax._pipeline.responses) against the standalone functions.

Routes compared:
* every quantity of ``responses`` (one eigh per k, one μ contraction per chunk) equals its
  standalone public function (separate passes, per-k einsums) to ≤ 1e-12 relative, on Haldane,
  the spinful
  Rashba lattice and a random 8-band spinful tight-binding model (2D) and a 4-band one (3D);
* the contracted magnetoelectric kernel equals ``magnetoelectric_interband`` band by band;
* gradients with respect to model parameters equal those of the standalone functions;
* μ interpolation: the error against the exact weights obeys the cubic-interpolation bound
  |w − Σ L_g w(ε_g)| ≤ (9/16)(h⁴/4!) max|w⁗| (max|w⁗| from nested autodiff, not from the code under
  test) and falls as (h/T)⁴.
"""

import itertools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close

import qgeo_jax as qg
from qgeo_jax._kinetic import kinetic_magnetization
from qgeo_jax._magnetoelectric import magnetoelectric_interband
from qgeo_jax._pipeline import (
    _WINDOW,
    QUANTITIES,
    grid_points,
    lagrange_weights,
    magnetoelectric_kernel,
    responses,
)
from qgeo_jax.models import PAULI, RashbaLattice, TightBinding

TAU = 1.7


def random_spinful_tb(norb, dim, seed, *, on_site=False, spin_first=False):
    """Random complex hoppings to nearest cells, random orbital positions, S = 1 ⊗ σ/2.

    ``on_site``: the two spinor partners share a position (as in a spinor Wannier basis);
    ``spin_first``: S = σ/2 ⊗ 1 (all up orbitals first, then all down).
    """
    rng = np.random.default_rng(seed)
    hops = []
    unit = [tuple(int(i == a) for i in range(dim)) for a in range(dim)]
    for R in [(0,) * dim] + unit:
        for i, j in itertools.product(range(norb), repeat=2):
            if R == (0,) * dim and j <= i:
                continue
            hops.append(((rng.normal() + 1j * rng.normal()) * 0.5 / np.sqrt(norb), i, j, R))
    if spin_first:
        spin = np.stack([np.kron(s / 2, np.eye(norb // 2)) for s in PAULI])
    else:
        spin = np.stack([np.kron(np.eye(norb // 2), s / 2) for s in PAULI])
    positions = rng.uniform(size=(norb, dim))
    if on_site:
        site = np.arange(norb) % (norb // 2) if spin_first else np.arange(norb) // 2
        positions = positions[site]
    return TightBinding(np.eye(dim), positions, rng.normal(size=norb), hops, spin=spin)


def standalone(model, mesh, name, mu, temperature, chunk):
    kw = dict(mu=mu, temperature=temperature, chunk_size=chunk)
    if name == "orbital_magnetization":
        return qg.orbital_magnetization(model, mesh, **kw)
    if name == "anomalous_hall_conductivity":
        return qg.anomalous_hall_conductivity(model, mesh, **kw)
    if name == "spin_magnetization":
        return qg.spin_magnetization(model, mesh, g_factor=1.9, **kw)
    _, part, mech = name.split("_")
    extra = dict(tau=TAU) if mech == "extrinsic" else {}
    return kinetic_magnetization(
        model, mesh, part=part, mechanism=mech, g_factor=1.9, **extra, **kw
    )


def rel_err(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return np.max(np.abs(a - b)) / np.max(np.abs(b))


CASES = {
    "haldane": (
        lambda: qg.models.Haldane(t2=0.15, phi=np.pi / 2, delta=0.2),
        (16, 16),
        ("orbital_magnetization", "anomalous_hall_conductivity"),
    ),
    "rashba": (
        lambda: RashbaLattice(alpha=0.6, exchange=(0.15, 0.05, 0.3), onsite=0.1),
        (14, 14),
        QUANTITIES,
    ),
    "random8": (lambda: random_spinful_tb(8, 2, 11), (8, 8), QUANTITIES),
    # on-site spin: the pipeline drops the positions phase and uses the spin-½ pair products
    "random8_on_site": (
        lambda: random_spinful_tb(8, 2, 12, on_site=True, spin_first=True),
        (8, 8),
        QUANTITIES,
    ),
}


def test_fast_paths_are_chosen_only_when_valid():
    """The spin-½ pair split and the phase-free gauge apply exactly when their conditions hold."""
    from qgeo_jax._pipeline import _phase_free, _spin_half_pairs

    inter = random_spinful_tb(8, 2, 1, spin_first=False, on_site=True)
    blocked = random_spinful_tb(8, 2, 1, spin_first=True, on_site=True)
    moved = random_spinful_tb(8, 2, 1, spin_first=True, on_site=False)
    up, down = _spin_half_pairs(inter).arrays
    np.testing.assert_array_equal(up, [0, 2, 4, 6])
    np.testing.assert_array_equal(down, [1, 3, 5, 7])
    up, down = _spin_half_pairs(blocked).arrays
    np.testing.assert_array_equal(up, [0, 1, 2, 3])
    np.testing.assert_array_equal(down, [4, 5, 6, 7])
    assert _phase_free(inter, True) and _phase_free(blocked, True)
    assert not _phase_free(moved, True)  # S couples orbitals at different positions
    assert _phase_free(moved, False)  # no spin needed: always allowed
    assert not _phase_free(RashbaLattice(alpha=0.6), True)  # not a TightBinding
    # not ½σ on pairs: scaled, or a rotated spin axis
    s = np.asarray(blocked.spin_operators())
    for bad in (1.5 * s, s[[1, 2, 0]]):
        model = TightBinding(
            np.eye(2), blocked.positions(), blocked.onsite, [(1.0, 0, 1, (1, 0))], spin=bad
        )
        assert _spin_half_pairs(model) is None


@pytest.mark.parametrize("case", list(CASES))
def test_every_quantity_equals_its_standalone_function(case):
    make, shape, names = CASES[case]
    model = make()
    mesh = qg.monkhorst_pack(model, shape)
    # μ (3, 1) against T (2,): outputs (3, 2); chunk 24 leaves a zero-weight padded last chunk.
    mu = jnp.array([[-0.7], [0.05], [0.9]])
    # T = 0 (step occupations) where no Fermi-surface quantity is requested
    temperature = jnp.array([0.04 if "kinetic_spin_extrinsic" in names else 0.0, 0.11])
    got = responses(
        model,
        mesh,
        mu=mu,
        temperature=temperature,
        tau=TAU if set(names) & {"kinetic_spin_extrinsic", "kinetic_orbital_extrinsic"} else None,
        quantities=names,
        g_factor=1.9,
        chunk_size=24,
    )
    assert set(got) == set(names)
    for name in names:
        ref = standalone(model, mesh, name, mu, temperature, 24)
        assert got[name].shape == ref.shape, name
        assert rel_err(got[name], ref) <= 1e-12, (name, rel_err(got[name], ref))


@pytest.mark.slow
def test_3d_model_and_zero_temperature():
    """3D (all vector components, 6 GEMMs in F); T = 0 (step occupations) for the Fermi sea."""
    model = random_spinful_tb(4, 3, 5)
    mesh = qg.monkhorst_pack(model, (5, 5, 5))
    mu = jnp.array([-0.4, 0.3])
    names = (
        "orbital_magnetization",
        "spin_magnetization",
        "kinetic_spin_intrinsic",
        "kinetic_orbital_intrinsic",
    )
    got = responses(
        model, mesh, mu=mu, temperature=0.0, quantities=names, g_factor=1.9, chunk_size=32
    )
    for name in names:
        ref = standalone(model, mesh, name, mu, 0.0, 32)
        assert rel_err(got[name], ref) <= 1e-12, (name, rel_err(got[name], ref))
    got = responses(
        model,
        mesh,
        mu=mu,
        temperature=0.08,
        tau=TAU,
        g_factor=1.9,
        quantities=("kinetic_spin_extrinsic", "kinetic_orbital_extrinsic"),
        chunk_size=32,
    )
    for name in got:
        assert rel_err(got[name], standalone(model, mesh, name, mu, 0.08, 32)) <= 1e-12, name


@pytest.mark.parametrize("dim", [2, 3])
def test_magnetoelectric_kernel_equals_band_resolved_definition(dim, rng):
    model = random_spinful_tb(6, dim, 3 + dim)
    for k in rng.uniform(-np.pi, np.pi, size=(3, dim)):
        spec = qg.spectrum(model, jnp.asarray(k))
        ref = magnetoelectric_interband(spec)  # (n, 3, 3), padded velocities
        f, comps = magnetoelectric_kernel(spec.energies, spec.velocity[:dim], 1e-8)
        assert comps == ((2,) if dim == 2 else (0, 1, 2))
        assert_close(f, ref[:, list(comps), :dim], rtol=1e-12, atol=1e-12 * np.max(np.abs(ref)))
        # the components F cannot have vanish identically in the reference
        rest = np.delete(np.asarray(ref), list(comps), axis=1)
        assert np.max(np.abs(rest), initial=0.0) <= 1e-14 * np.max(np.abs(ref))


@pytest.mark.parametrize(
    "names",
    [
        ("orbital_magnetization", "kinetic_spin_intrinsic"),
        pytest.param(
            ("spin_magnetization", "kinetic_spin_extrinsic", "kinetic_orbital_intrinsic"),
            marks=pytest.mark.slow,
        ),
    ],
)
def test_gradients_equal_standalone_gradients(names):
    mesh = qg.monkhorst_pack(RashbaLattice(), (8, 8))
    mu = jnp.array([-1.2, 0.2])
    cot = jnp.asarray(np.random.default_rng(4).normal(size=(2, 3, 3)))

    def fused(p, names):
        model = RashbaLattice(alpha=p[0], exchange=jnp.array([0.1, 0.0, p[1]]))
        tau = TAU if any("extrinsic" in n for n in names) else None
        out = responses(
            model, mesh, mu=mu, temperature=0.07, tau=tau, quantities=names, chunk_size=32
        )
        return sum(
            jnp.sum(cot[..., : out[n].shape[-1]] * out[n].reshape(2, -1, out[n].shape[-1]))
            for n in names
        )

    def separate(p, names):
        model = RashbaLattice(alpha=p[0], exchange=jnp.array([0.1, 0.0, p[1]]))
        total = 0.0
        for n in names:
            out = standalone(model, mesh, n, mu, 0.07, 32)
            if n == "spin_magnetization":
                out = out / 1.9 * 2.0  # standalone() uses g = 1.9, responses() the default 2
            elif n.startswith("kinetic_spin"):
                out = out / 1.9 * 2.0
            total = total + jnp.sum(cot[..., : out.shape[-1]] * out.reshape(2, -1, out.shape[-1]))
        return total

    p = jnp.array([0.6, 0.3])
    g_fused = jax.grad(fused)(p, names)
    g_sep = jax.grad(separate)(p, names)
    assert np.all(np.isfinite(g_fused))
    assert_close(g_fused, g_sep, rtol=1e-10, atol=1e-12 * float(np.max(np.abs(g_sep))))


# --- μ interpolation ----------------------------------------------------------------------
def test_lagrange_weights_reproduce_cubics():
    t = jnp.linspace(0.0, 0.999, 37)
    lw = lagrange_weights(t)
    nodes = jnp.array([-1.0, 0.0, 1.0, 2.0])
    for p in ([1, 0, 0, 0], [0.3, -1, 0, 0], [0.1, 0.2, -0.7, 0], [2.0, -0.5, 0.25, 1.3]):
        poly = lambda x, p=p: p[0] + p[1] * x + p[2] * x**2 + p[3] * x**3
        assert_close(lw @ poly(nodes), poly(t), rtol=0, atol=1e-13)


def _max_fourth_derivative(weight, temperature):
    """max_E |∂⁴w/∂E⁴| by nested forward-mode autodiff on a dense grid (μ = 0)."""
    d = lambda e: weight(e, 0.0, temperature)
    for _ in range(4):
        d = jax.grad(d)
    x = jnp.linspace(-30 * temperature, 30 * temperature, 20001)
    return float(jnp.max(jnp.abs(jax.vmap(d)(x))))


def test_interpolation_error_obeys_the_cubic_bound_and_scales_as_h4():
    """|R_interp − R_exact| ≤ (9/16)(h⁴/24) max|w⁗| Σ_kn |A_kn|, with Σ|A| from band_geometry."""
    model = RashbaLattice(alpha=0.6, exchange=(0.15, 0.05, 0.3), onsite=0.1)
    mesh = qg.monkhorst_pack(model, (16, 16))
    mu, temperature = jnp.linspace(-1.5, 1.0, 7), 0.1
    names = ("anomalous_hall_conductivity", "kinetic_orbital_extrinsic")
    exact = responses(model, mesh, mu=mu, temperature=temperature, tau=TAU, quantities=names)
    k, w = mesh.all_points()
    geo = jax.vmap(lambda kk: qg.band_geometry(model, kk))(k)
    sum_abs = {
        "anomalous_hall_conductivity": float(
            jnp.sum(w[:, None] * jnp.abs(geo.berry_curvature[..., 2]))
        ),
        "kinetic_orbital_extrinsic": TAU
        * float(
            jnp.max(
                jnp.sum(
                    w[:, None, None]
                    * jnp.abs(geo.orbital_moment[..., 2:3] * geo.velocity[..., :2]),
                    axis=(0, 1),
                )
            )
        ),
    }
    w4 = {
        "anomalous_hall_conductivity": _max_fourth_derivative(qg.fermi_dirac, temperature),
        "kinetic_orbital_extrinsic": _max_fourth_derivative(qg.fermi_dirac_derivative, temperature),
    }
    # the ratios the module docstring quotes: max|f0⁗| T⁴ ≈ 0.125, max|f0'⁗| T⁵ ≈ 0.25
    assert 0.1 < w4["anomalous_hall_conductivity"] * temperature**4 < 0.15
    errors = {}
    for spacing in (0.5, 0.25, 0.125):
        n_grid = grid_points(mu, temperature, spacing)
        h = (float(mu.max() - mu.min()) + 2 * _WINDOW * temperature) / (n_grid - 3)
        assert h <= spacing * temperature
        got = responses(
            model,
            mesh,
            mu=mu,
            temperature=temperature,
            tau=TAU,
            quantities=names,
            mu_method="interpolated",
            interp_spacing=spacing,
        )
        for name in names:
            err = float(np.max(np.abs(np.asarray(got[name]) - np.asarray(exact[name]))))
            bound = 9 / 16 * h**4 / 24 * w4[name] * sum_abs[name]
            assert err <= bound, (name, spacing, err, bound)
            errors[(name, spacing)] = err / float(np.max(np.abs(exact[name])))
    for name in names:
        # (h/T)⁴: halving h divides the error by ~16 (allow for the rounding of G and cancellations)
        assert errors[(name, 0.25)] / errors[(name, 0.125)] > 6, errors
        assert errors[(name, 0.125)] < 2e-5, errors


def test_interpolated_full_set_and_energies_outside_the_window():
    """All quantities, a random 8-band model whose bands extend far below and above the μ window."""
    model = random_spinful_tb(8, 2, 11)
    mesh = qg.monkhorst_pack(model, (8, 8))
    mu = jnp.array([-0.3, 0.0, 0.25])  # window ±40 T around these: most bands lie outside it
    exact = responses(model, mesh, mu=mu, temperature=0.01, tau=TAU, chunk_size=32)
    interp = responses(
        model, mesh, mu=mu, temperature=0.01, tau=TAU, chunk_size=32, mu_method="interpolated"
    )
    assert set(interp) == set(QUANTITIES)
    for name in QUANTITIES:
        assert rel_err(interp[name], exact[name]) < 1e-5, (name, rel_err(interp[name], exact[name]))


# --- API --------------------------------------------------------------------------------
def test_default_quantities_and_errors():
    haldane = qg.models.Haldane()
    mesh = qg.monkhorst_pack(haldane, (6, 6))
    out = responses(haldane, mesh, mu=0.0, temperature=0.05)
    assert set(out) == {
        "orbital_magnetization",
        "anomalous_hall_conductivity",
        "kinetic_orbital_intrinsic",
    }
    out = responses(
        haldane, mesh, mu=0.0, temperature=0.05, quantities=("orbital_magnetoelectric_tensor",)
    )
    assert set(out) == {"kinetic_orbital_intrinsic"} and out["kinetic_orbital_intrinsic"].shape == (
        3,
        3,
    )
    with pytest.raises(ValueError, match="unknown quantity"):
        responses(haldane, mesh, mu=0.0, quantities=("hall",))
    with pytest.raises(ValueError, match="spin operators"):
        responses(haldane, mesh, mu=0.0, quantities=("spin_magnetization",))
    with pytest.raises(ValueError, match="tau"):
        responses(haldane, mesh, mu=0.0, temperature=0.1, quantities=("kinetic_orbital_extrinsic",))
    with pytest.raises(ValueError, match="temperature > 0"):
        responses(haldane, mesh, mu=0.0, temperature=0.0, mu_method="interpolated")
    with pytest.raises(ValueError, match="only by the extrinsic"):
        responses(haldane, mesh, mu=0.0, tau=1.0, quantities=("orbital_magnetization",))
    with pytest.raises(ValueError, match="mu_method"):
        responses(haldane, mesh, mu=0.0, mu_method="spline")


def _check_grouped_route(model, k):
    from qgeo_jax._pipeline import _hamiltonian_and_gradient, _hopping_groups, _hopping_matrices
    from qgeo_jax._spectrum import hamiltonian_and_gradient

    groups = _hopping_groups(model)
    assert groups is not None

    def both(hopping, pos):
        m = eqx.tree_at(lambda m: (m.hopping, m.reduced_positions), model, (hopping, pos))
        fast = _hamiltonian_and_gradient(m, k, groups, _hopping_matrices(m, groups))
        return fast, hamiltonian_and_gradient(m, k, pad=False)

    fast, ref = jax.jit(both)(model.hopping, model.reduced_positions)
    for a, b in zip(fast, ref, strict=True):
        assert_close(a, b, rtol=0, atol=1e-13)
    if model.convention == "cell":
        return

    # derivatives of ∂H with respect to the orbital positions, of H w.r.t. the hopping amplitudes
    def dh_of_positions(route):
        def fn(p):
            dh = both(model.hopping, p)[route][1]
            return jnp.stack([jnp.real(dh), jnp.imag(dh)])

        return jax.jit(jax.jacfwd(fn))(model.reduced_positions)

    assert_close(dh_of_positions(0), dh_of_positions(1), rtol=0, atol=1e-12)

    def h_of_hoppings(route):
        def fn(x):
            return jnp.real(both(x + 1j * model.hopping.imag, model.reduced_positions)[route][0])

        return jax.jit(jax.jacfwd(fn))(model.hopping.real)

    assert_close(h_of_hoppings(0), h_of_hoppings(1), rtol=0, atol=1e-13)


def test_grouped_hopping_route_equals_the_model_hamiltonian(rng):
    """The TightBinding fast path (hoppings grouped by R) gives the model's H, ∂H and their
    parameter derivatives."""
    for dim, convention in ((2, "positions"), (3, "cell")):
        base = random_spinful_tb(4, dim, 7 + dim)
        hops = [
            (complex(t), int(i), int(j), tuple(int(r) for r in R))
            for t, i, j, R in zip(
                np.asarray(base.hopping),
                base.hop_i,
                base.hop_j,
                np.asarray(base.hop_R),
                strict=True,
            )
        ]
        lattice = np.eye(dim) + 0.1 * rng.normal(size=(dim, dim))
        model = TightBinding(
            lattice, base.reduced_positions, base.onsite, hops, convention=convention
        )
        _check_grouped_route(model, jnp.asarray(rng.uniform(-np.pi, np.pi, size=dim)))
