"""Degeneracy-safe eigh and masked reciprocals.

The test model is a PT-symmetric four-band Dirac model H(k) = d_0(k) + Σ_{a=1..5} d_a(k) Γ_a with
five anticommuting Hermitian Γ matrices (Γ_a Γ_b + Γ_b Γ_a = 2δ_ab): H² − 2d_0 H + d_0² = |d|², so
every band is exactly doubly degenerate (Kramers pairs) with E = d_0 ∓ |d| at every k.
Closed forms for the lower pair with projector P = (1 − d̂·Γ)/2 (e.g. Bernevig & Hughes,
*Topological Insulators and Topological Superconductors* (2013), ch. 8):
* the quantum metric per band (averaged over the pair) g_ij = ¼ ∂_i d̂·∂_j d̂
  [Re tr(P ∂_iP (1−P) ∂_jP) = ½ tr(∂_iP ∂_jP) = ½ ∂_i d̂·∂_j d̂ for the pair of two bands];
* the Berry curvature of the pair vanishes (PT symmetry).
Stock ``jnp.linalg.eigh`` differentiates to NaN there; :func:`qgeo_jax._linalg.eigh` must give
finite gradients of gauge-invariant outputs equal to central finite differences.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close

from qgeo_jax._geometry import band_geometry
from qgeo_jax._linalg import denominators, eigh, safe_reciprocal
from qgeo_jax.models import PAULI, from_function

S0 = np.eye(2, dtype=complex)
GAMMA = np.stack(
    [
        np.kron(PAULI[0], PAULI[0]),
        np.kron(PAULI[0], PAULI[1]),
        np.kron(PAULI[0], PAULI[2]),
        np.kron(PAULI[1], S0),
        np.kron(PAULI[2], S0),
    ]
)


def test_gamma_matrices_are_a_clifford_set():
    for a in range(5):
        for b in range(5):
            anti = GAMMA[a] @ GAMMA[b] + GAMMA[b] @ GAMMA[a]
            np.testing.assert_allclose(anti, 2 * (a == b) * np.eye(4), atol=1e-15)


def _dvec(k, p):
    kx, ky = k[0], k[1]
    return jnp.stack(
        [
            p["v"] * jnp.sin(kx),
            p["v"] * jnp.sin(ky),
            p["m"] + jnp.cos(kx) + jnp.cos(ky),
            p["w"] * jnp.sin(kx + ky),
            p["u"] * jnp.cos(kx - ky),
        ]
    )


def _h(k, p):
    return p["e0"] * (jnp.cos(k[0]) - jnp.cos(k[1])) * jnp.eye(4) + jnp.einsum(
        "a,aij->ij", _dvec(k, p), GAMMA
    )


PARAMS = {"v": 1.0, "m": -0.8, "w": 0.35, "u": 0.25, "e0": 0.3}
K_POINTS = np.array([[0.3, -1.1], [2.0, 0.4], [-0.7, 2.9], [1.234, 1.234]])


def _model(params=PARAMS):
    return from_function(_h, params, dim=2, lattice=np.eye(2))


def test_kramers_pairs_are_exactly_degenerate():
    model = _model()
    for k in K_POINTS:
        e = np.asarray(eigh(model.hamiltonian(jnp.asarray(k)))[0])
        d = np.linalg.norm(np.asarray(_dvec(jnp.asarray(k), PARAMS)))
        d0 = PARAMS["e0"] * (np.cos(k[0]) - np.cos(k[1]))
        assert_close(e, [d0 - d, d0 - d, d0 + d, d0 + d], rtol=1e-13)


def test_degenerate_metric_closed_form():
    model = _model()
    geo = jax.jit(jax.vmap(lambda k: band_geometry(model, k)))(jnp.asarray(K_POINTS))
    jac = jax.vmap(jax.jacfwd(lambda k: _dvec(k, model.params)))(jnp.asarray(K_POINTS))  # [k, a, i]
    d = jax.vmap(lambda k: _dvec(k, model.params))(jnp.asarray(K_POINTS))
    nd = jnp.linalg.norm(d, axis=-1)
    dhat = (
        jac / nd[:, None, None]
        - d[:, :, None] * jnp.einsum("ka,kai->ki", d, jac)[:, None, :] / nd[:, None, None] ** 3
    )
    g_closed = 0.25 * np.einsum("kai,kaj->kij", dhat, dhat)
    for band in range(4):
        assert_close(
            np.asarray(geo.quantum_metric)[:, band, :2, :2],
            g_closed,
            rtol=1e-11,
            atol=1e-14,
            what=f"band {band}",
        )
        assert_close(geo.berry_curvature[:, band], 0.0, rtol=0, atol=1e-13, what="PT: Ω = 0")
        assert_close(geo.orbital_moment[:, band], 0.0, rtol=0, atol=1e-13, what="PT: m = 0")


def _projector_observable(eigh_fn, params, k):
    """Gauge-invariant: Re tr(P_occ A) with P_occ the projector on the lower Kramers pair."""
    a = jnp.asarray(np.diag([1.0, 2.0, -0.5, 0.7]) + 0.1)
    _, u = eigh_fn(_h(k, params))
    p_occ = u[:, :2] @ jnp.conj(u[:, :2]).T
    return jnp.real(jnp.trace(p_occ @ a))


def _central_difference(f, params, h=1e-6):
    """∂f/∂p by central differences (error ~h² f''' ≈ 1e-12, round-off ~1e-10)."""
    out = {}
    for name in params:
        up = dict(params, **{name: params[name] + h})
        dn = dict(params, **{name: params[name] - h})
        out[name] = (f(up) - f(dn)) / (2 * h)
    return out


def test_stock_eigh_gradient_fails_at_degeneracy_ours_matches_finite_differences():
    """Stock eigh: NaN for a bit-exact degeneracy, garbage (≠ finite differences) for one split
    only by round-off; the custom rule: finite and equal to central differences in both cases."""
    # (a) bit-exact degeneracy: H(s) = diag(1, 1, 2, 3) + s B at s = 0.
    b = jnp.asarray(
        np.array(
            [
                [0.0, 0.3, 1.0, 0.2],
                [0.3, 0.5, 0.1, 0.4],
                [1.0, 0.1, -0.2, 0.3],
                [0.2, 0.4, 0.3, 0.1],
            ]
        ),
        dtype=complex,
    )
    obs = lambda fn: (
        lambda s: (lambda u: jnp.real(jnp.trace((u[:, 2:] @ jnp.conj(u[:, 2:]).T) @ b)))(
            fn(jnp.diag(jnp.array([1.0, 1.0, 2.0, 3.0], dtype=complex)) + s * b)[1]
        )
    )
    assert not np.isfinite(float(jax.grad(obs(jnp.linalg.eigh))(0.0)))
    ours = float(jax.grad(obs(eigh))(0.0))
    fd = (float(obs(eigh)(1e-6)) - float(obs(eigh)(-1e-6))) / 2e-6
    assert np.isfinite(ours)
    assert_close(ours, fd, rtol=1e-7, atol=1e-9)
    # (b) Kramers pairs of the Γ model (split by ~1e-16 in floating point).
    params = {n: jnp.asarray(v) for n, v in PARAMS.items()}
    worst_stock = 0.0
    for k in map(jnp.asarray, K_POINTS):
        stock = jax.grad(lambda p, k=k: _projector_observable(jnp.linalg.eigh, p, k))(params)
        safe = jax.grad(lambda p, k=k: _projector_observable(eigh, p, k))(params)
        fd = _central_difference(lambda p, k=k: float(_projector_observable(eigh, p, k)), PARAMS)
        for name in PARAMS:
            assert np.isfinite(float(safe[name]))
            assert_close(safe[name], fd[name], rtol=1e-7, atol=1e-9, what=name)
            err = abs(float(stock[name]) - fd[name])
            worst_stock = max(worst_stock, err if np.isfinite(err) else np.inf)
    assert worst_stock > 1e-3, "stock eigh is expected to be wrong at these degeneracies"


@pytest.mark.parametrize("k", K_POINTS[:3].tolist())
def test_gradient_of_degenerate_geometry_matches_finite_differences(k):
    """∂/∂θ of pair-summed g, m, Ω and of the energies through the full band_geometry pipeline."""
    k = jnp.asarray(k)

    model = _model()

    def outputs(p):
        # the model is built once, outside the trace; its params are swapped in (equinox tree_at)
        geo = band_geometry(eqx.tree_at(lambda mod: mod.params, model, p), k)
        return jnp.stack(
            [
                jnp.sum(geo.quantum_metric[:2, 0, 0]),
                jnp.sum(geo.quantum_metric[2:, 0, 1]),
                jnp.sum(geo.quantum_metric[:2, 1, 1]),
                jnp.sum(geo.energies[:2]),
                jnp.sum(geo.velocity[:2, 0]),
            ]
        )

    params = {n: jnp.asarray(v) for n, v in PARAMS.items()}
    jac = jax.jit(jax.jacrev(outputs))(params)
    fwd = jax.jit(jax.jacfwd(outputs))(params)
    f = jax.jit(outputs)
    fd = _central_difference(
        lambda p: np.asarray(f({n: jnp.asarray(v) for n, v in p.items()})), PARAMS, h=1e-5
    )
    for name in PARAMS:
        assert np.all(np.isfinite(np.asarray(jac[name]))), name
        # h = 1e-5: truncation ~1e-10, round-off ~1e-16/1e-5 ≈ 1e-11 (relative to O(1) outputs)
        assert_close(jac[name], fd[name], rtol=1e-6, atol=1e-8, what=f"reverse {name}")
        assert_close(
            fwd[name], jac[name], rtol=1e-10, atol=1e-13, what=f"forward vs reverse {name}"
        )


def test_eigh_values_match_numpy(rng):
    x = rng.normal(size=(6, 6)) + 1j * rng.normal(size=(6, 6))
    h = x + x.conj().T
    w, v = eigh(jnp.asarray(h))
    assert_close(w, np.linalg.eigvalsh(h), rtol=1e-13)
    assert_close(
        np.asarray(v) @ np.diag(np.asarray(w)) @ np.asarray(v).conj().T, h, rtol=0, atol=1e-12
    )


def test_eigh_jvp_matches_stock_away_from_degeneracy(rng):
    """Non-degenerate matrix: the custom rule equals the stock one (eigenvalues and a
    gauge-invariant projector observable), forward and reverse."""
    x = rng.normal(size=(5, 5)) + 1j * rng.normal(size=(5, 5))
    h0, dh = x + x.conj().T, rng.normal(size=(5, 5))
    dh = jnp.asarray(dh + dh.T, dtype=complex)
    obs = lambda fn: (
        lambda s: (lambda w, u: jnp.stack([w[1], jnp.abs(u[0, 2]) ** 2]))(*fn(h0 + s * dh))
    )
    ours = jax.jacfwd(obs(eigh))(0.0)
    stock = jax.jacfwd(obs(jnp.linalg.eigh))(0.0)
    assert_close(ours, stock, rtol=1e-10)
    assert_close(jax.jacrev(obs(eigh))(0.0), stock, rtol=1e-10)


def test_safe_reciprocal_and_denominators_have_finite_gradients():
    x = jnp.array([0.0, 2.0, -4.0])
    mask = x != 0
    assert_close(safe_reciprocal(x, mask), [0.0, 0.5, -0.25], rtol=0, atol=0)
    g = jax.grad(lambda y: jnp.sum(safe_reciprocal(y, y != 0)))(x)
    assert_close(g, [0.0, -0.25, -1 / 16], rtol=1e-15)
    # the naive pattern would give NaN here — that is why the double `where` exists
    naive = jax.grad(lambda y: jnp.sum(jnp.where(y != 0, 1.0 / y, 0.0)))(x)
    assert not np.isfinite(np.asarray(naive)).all()

    e = jnp.array([-1.0, -1.0, 0.5, 2.0])
    inv1, inv2, deg = denominators(e, 1e-8)
    expected = np.zeros((4, 4))
    for n in range(4):
        for m in range(4):
            if abs(e[n] - e[m]) > 1e-8:
                expected[n, m] = 1 / (e[n] - e[m])
    assert_close(inv1, expected, rtol=1e-15)
    assert_close(inv2, expected**2, rtol=1e-15)
    assert np.array_equal(
        np.asarray(deg), np.abs(np.subtract.outer(np.asarray(e), np.asarray(e))) < 1e-8
    )
    grad = jax.grad(lambda y: jnp.sum(denominators(y, 1e-8)[1]))(e)
    assert np.isfinite(np.asarray(grad)).all()
