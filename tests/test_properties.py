r"""Property-based tests on random Hermitian Bloch Hamiltonians (hypothesis, derandomized).

Random models: H(k) = h0 + Σ_R (t_R e^{ik·R} + h.c.) on a square lattice with R ∈ {x, y, x+y, x−y},
random complex t_R and Hermitian h0, built with :func:`qgeo_jax.models.from_function`. Properties
(exact identities, so the tolerances are round-off):

* gauge invariance: a constant unitary change of orbital basis H → W H W†, S → W S W† leaves E_n,
  Ω_n, g_n, m_n, ⟨S⟩_n and the integrated responses unchanged (they are functions of the projectors
  |n⟩⟨n| and of ∂H; Xiao, Chang, Niu, RMP 82, 1959 (2010), doi:10.1103/RevModPhys.82.1959);
* Σ_n Ω_n(k) = 0 at every k (Ω_n^{ij} = −2 Im Σ_{m≠n} v^i_{nm}v^j_{mn}/(E_n−E_m)² is antisymmetric
  under n ↔ m term by term);
* time reversal: real hoppings give H(−k) = H(k)*, hence E_n(−k) = E_n(k), Ω_n(−k) = −Ω_n(k),
  m_n(−k) = −m_n(k), g_n(−k) = g_n(k), and zero AHC and M^O on a k → −k symmetric mesh; a spinful
  Kramers model (Θ = iσ_y K) has ⟨S⟩_n(−k) = −⟨S⟩_n(k) and zero M^S;
* Hermiticity: v^a_{nm}, S^i_{nm} are Hermitian matrices, the quantum geometric tensor
  Q_n^{ij} = g_n^{ij} − (i/2)Ω_n^{ij} is a Hermitian, positive semidefinite 3 × 3 matrix
  (Provost & Vallee, Commun. Math. Phys. 76, 289 (1980)); the band velocity equals a central finite
  difference of E_n(k) (a second route to ⟨n|∂H|n⟩ = ∂E_n).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import qgeo_jax as qg
from qgeo_jax._geometry import band_geometry
from qgeo_jax._spectrum import spectrum
from qgeo_jax.models import PAULI, from_function

SETTINGS = settings(
    max_examples=8,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
SEEDS = st.integers(0, 2**32 - 1)
SIZES = st.sampled_from([2, 3, 4])
RS = np.array([[1, 0], [0, 1], [1, 1], [1, -1]], dtype=np.float64)


# Module-level functions: from_function models share one compiled program per matrix size.
def _bloch(k, p):
    a = jnp.einsum("r,rij->ij", jnp.exp(1j * (RS @ k)), p["t"])
    return p["h0"] + a + jnp.conj(a.T)


def _rotated(k, p):
    return p["w"] @ _bloch(k, p) @ jnp.conj(p["w"].T)


def _hermitian(rng, n, real=False):
    a = rng.normal(size=(n, n)) + (0 if real else 1j * rng.normal(size=(n, n)))
    return (a + a.conj().T) / 2


def _unitary(rng, n):
    q, r = np.linalg.qr(rng.normal(size=(n, n)) + 1j * rng.normal(size=(n, n)))
    return q * (np.diag(r) / np.abs(np.diag(r)))


def random_model(seed, n, *, real=False, spin=True):
    rng = np.random.default_rng(seed)
    t = 0.6 * (rng.normal(size=(4, n, n)) + (0 if real else 1j * rng.normal(size=(4, n, n))))
    params = {"t": t.astype(np.complex128), "h0": _hermitian(rng, n, real).astype(np.complex128)}
    s = np.stack([_hermitian(rng, n) for _ in range(3)]) if spin else None
    return from_function(_bloch, params, dim=2, lattice=np.eye(2), spin=s), params, s, rng


def _gap(model, k):
    e = np.linalg.eigvalsh(np.asarray(model.hamiltonian(jnp.asarray(k))))
    return np.min(np.diff(e))


def _close(a, b, rtol, what):
    a, b = np.asarray(a), np.asarray(b)
    scale = max(np.max(np.abs(a)), np.max(np.abs(b)), 1e-300)
    np.testing.assert_allclose(a, b, rtol=0, atol=rtol * scale, err_msg=what)


@SETTINGS
@given(seed=SEEDS, n=SIZES)
def test_gauge_invariance_under_unitary_basis_change(seed, n):
    model, params, s, rng = random_model(seed, n)
    w = _unitary(rng, n)
    s_rot = np.einsum("ij,ajk,lk->ail", w, s, w.conj())
    rotated = from_function(_rotated, params | {"w": w}, dim=2, lattice=np.eye(2), spin=s_rot)
    for k in rng.uniform(-np.pi, np.pi, size=(3, 2)):
        assume(_gap(model, k) > 1e-2)
        a, b = band_geometry(model, jnp.asarray(k)), band_geometry(rotated, jnp.asarray(k))
        _close(a.energies, b.energies, 1e-12, "E_n")
        _close(a.berry_curvature, b.berry_curvature, 1e-8, "Ω_n")
        _close(a.quantum_metric, b.quantum_metric, 1e-8, "g_n")
        _close(a.orbital_moment, b.orbital_moment, 1e-8, "m_n")
        _close(a.spin, b.spin, 1e-10, "<S>_n")


@settings(SETTINGS, max_examples=4)
@given(seed=SEEDS)
def test_gauge_invariance_of_integrated_responses(seed):
    model, params, s, rng = random_model(seed, 3)
    w = _unitary(rng, 3)
    rotated = from_function(
        _rotated,
        params | {"w": w},
        dim=2,
        lattice=np.eye(2),
        spin=np.einsum("ij,ajk,lk->ail", w, s, w.conj()),
    )
    mesh = qg.monkhorst_pack(model, (6, 6))
    mu = jnp.array([-1.0, 0.0, 1.0])
    for fn in (qg.orbital_magnetization, qg.anomalous_hall_conductivity, qg.spin_magnetization):
        _close(
            fn(model, mesh, mu=mu, temperature=0.1),
            fn(rotated, mesh, mu=mu, temperature=0.1),
            1e-9,
            fn.__name__,
        )


@SETTINGS
@given(seed=SEEDS, n=SIZES)
def test_berry_curvature_sums_to_zero_over_bands(seed, n):
    model, _, _, rng = random_model(seed, n, spin=False)
    for k in rng.uniform(-np.pi, np.pi, size=(3, 2)):
        assume(_gap(model, k) > 1e-3)
        geo = band_geometry(model, jnp.asarray(k))
        omega = np.asarray(geo.berry_curvature)
        assert np.max(np.abs(omega)) > 0
        np.testing.assert_allclose(omega.sum(0), 0.0, atol=1e-10 * np.abs(omega).sum())


@SETTINGS
@given(seed=SEEDS, n=SIZES)
def test_time_reversal_zeros(seed, n):
    model, _, _, rng = random_model(seed, n, real=True, spin=False)
    for k in rng.uniform(-np.pi, np.pi, size=(2, 2)):
        assume(_gap(model, k) > 1e-2)
        p, m = band_geometry(model, jnp.asarray(k)), band_geometry(model, jnp.asarray(-k))
        _close(p.energies, m.energies, 1e-12, "E(−k) = E(k)")
        _close(p.berry_curvature, -np.asarray(m.berry_curvature), 1e-8, "Ω(−k) = −Ω(k)")
        _close(p.orbital_moment, -np.asarray(m.orbital_moment), 1e-8, "m(−k) = −m(k)")
        _close(p.quantum_metric, m.quantum_metric, 1e-8, "g(−k) = g(k)")
        assert np.max(np.abs(p.berry_curvature)) > 1e-6  # not a trivial zero
    # Shift ½ on an even mesh: symmetric under k → −k and free of the TR-invariant points.
    mesh = qg.monkhorst_pack(model, (8, 8), shift=0.5)
    mu = jnp.array([-0.5, 0.5])
    ahc = qg.anomalous_hall_conductivity(model, mesh, mu=mu, temperature=0.2)
    mo = qg.orbital_magnetization(model, mesh, mu=mu, temperature=0.2)
    np.testing.assert_allclose(ahc, 0.0, atol=1e-12)
    np.testing.assert_allclose(mo, 0.0, atol=1e-12)


def _kramers(k, p):
    """Θ = (1 ⊗ iσ_y)K symmetric: A(k) ⊗ σ0 + Σ_i B_i(k) ⊗ σ_i, A with real hoppings, B_i with
    imaginary ones (then A(k)* = A(−k) and B_i(k)* = −B_i(−k))."""
    phase = jnp.exp(1j * (RS @ k))
    a = jnp.einsum("r,rij->ij", phase, p["a"])
    h = jnp.kron(p["a0"] + a + jnp.conj(a.T), jnp.eye(2))
    for i in range(3):
        b = jnp.einsum("r,rij->ij", phase, 1j * p["b"][i])
        h = h + jnp.kron(b + jnp.conj(b.T), PAULI[i])
    return h


@SETTINGS
@given(seed=SEEDS, n=st.sampled_from([1, 2]))
def test_kramers_model_has_odd_spin_texture_and_no_spin_magnetization(seed, n):
    rng = np.random.default_rng(seed)
    params = {
        "a": rng.normal(size=(4, n, n)),
        "a0": _hermitian(rng, n, real=True),
        "b": 0.5 * rng.normal(size=(3, 4, n, n)),
    }
    spin = np.stack([np.kron(np.eye(n), PAULI[i] / 2) for i in range(3)])
    model = from_function(_kramers, params, dim=2, lattice=np.eye(2), spin=spin)
    for k in rng.uniform(-np.pi, np.pi, size=(2, 2)):
        assume(_gap(model, k) > 1e-2)
        p, m = band_geometry(model, jnp.asarray(k)), band_geometry(model, jnp.asarray(-k))
        _close(p.energies, m.energies, 1e-12, "E(−k) = E(k)")
        _close(p.spin, -np.asarray(m.spin), 1e-9, "<S>(−k) = −<S>(k)")
        assert np.max(np.abs(p.spin)) > 1e-6
    mesh = qg.monkhorst_pack(model, (8, 8), shift=0.5)
    ms = qg.spin_magnetization(model, mesh, mu=jnp.array([-0.5, 0.3]), temperature=0.2)
    np.testing.assert_allclose(ms, 0.0, atol=1e-12)


@SETTINGS
@given(seed=SEEDS, n=SIZES)
def test_outputs_are_hermitian_where_they_must_be(seed, n):
    model, _, _, rng = random_model(seed, n)
    k = rng.uniform(-np.pi, np.pi, size=2)
    assume(_gap(model, k) > 1e-2)
    spec = spectrum(model, jnp.asarray(k))
    v, s = np.asarray(spec.velocity), np.asarray(spec.spin)
    _close(v, np.conj(np.swapaxes(v, -1, -2)), 1e-12, "v^a_nm Hermitian")
    _close(s, np.conj(np.swapaxes(s, -1, -2)), 1e-12, "S^i_nm Hermitian")
    geo = band_geometry(model, jnp.asarray(k))
    q = np.asarray(geo.quantum_geometric_tensor)
    _close(q, np.conj(np.swapaxes(q, -1, -2)), 1e-12, "Q_n Hermitian in (i, j)")
    _close(
        geo.quantum_metric,
        np.swapaxes(np.asarray(geo.quantum_metric), -1, -2),
        1e-12,
        "g symmetric",
    )
    omega = np.asarray(geo.berry_curvature_tensor)
    _close(omega, -np.swapaxes(omega, -1, -2), 1e-12, "Ω antisymmetric")
    _close(q, np.asarray(geo.quantum_metric) - 0.5j * omega, 1e-12, "Q = g − iΩ/2")
    eig = np.linalg.eigvalsh(q)
    assert np.all(eig >= -1e-10 * max(1.0, np.max(np.abs(eig)))), "Q_n is positive semidefinite"
    # Second route to the diagonal velocity: central differences of the eigenvalues.
    h = 1e-5
    energies = lambda kk: np.linalg.eigvalsh(np.asarray(model.hamiltonian(jnp.asarray(kk))))
    fd = np.stack([(energies(k + h * e) - energies(k - h * e)) / (2 * h) for e in np.eye(2)], -1)
    _close(np.asarray(geo.velocity)[:, :2], fd, 1e-7, "v_n = ∂E_n/∂k")


def test_random_models_compile_once_per_size():
    """The property tests rely on one compiled program per matrix size: equinox's jit caches on the
    tree structure, static fields (the shared function ``_bloch``) included."""
    a, b = random_model(1, 3)[0], random_model(2, 3)[0]
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    assert jax.tree_util.tree_structure(a) != jax.tree_util.tree_structure(
        random_model(1, 3, spin=False)[0]
    )
