"""Mixed precision (qgeo_jax._precision): float32 models/meshes, complex64 eigensystems, float64 sums.

Tolerances are those documented in the module docstring and benchmarks/README.md: on gapped or
well-split models float32 results agree with float64 to ~1e-6 relative; the tests allow 1e-4.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close

import qgeo_jax as qg
from qgeo_jax._bz import ExplicitMesh, monkhorst_pack
from qgeo_jax._kinetic import kinetic_magnetization
from qgeo_jax._precision import PRECISIONS, cast_precision, tree_precision, working_dtypes
from qgeo_jax._responses import (
    anomalous_hall_conductivity,
    chern_number_kubo,
    orbital_magnetization,
    spin_magnetization,
)
from qgeo_jax._spectrum import hamiltonian_and_gradient, spectrum
from qgeo_jax.models import Haldane, QiWuZhang, RashbaLattice, TightBinding, from_function
from qgeo_jax.models._base import PAULI

RTOL32 = 1e-4  # documented float32 tolerance on gapped / well-split models


def _random_tb(norb=4, seed=3, spin=False):
    """Small version of benchmarks/_models.py random_tight_binding (complex hoppings break T)."""
    rng = np.random.default_rng(seed)
    hops = []
    for R in [(0, 0), (1, 0), (0, 1)]:
        for i in range(norb):
            for j in range(norb):
                if R == (0, 0) and j <= i:
                    continue
                hops.append(((rng.normal() + 1j * rng.normal()) * 0.5 / np.sqrt(norb), i, j, R))
    spin_ops = None
    if spin:
        spin_ops = np.stack([np.kron(np.eye(norb // 2), s) for s in PAULI / 2])
    return TightBinding(np.eye(2), rng.uniform(0, 1, (norb, 2)), rng.normal(size=norb), hops, spin=spin_ops)


def _eigh_input_dtypes(fn, *args):
    """dtypes of every `eigh` primitive's input in the jaxpr of fn(*args) (a spy on the trace)."""
    found = []

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "eigh":
                found.append(eqn.invars[0].aval.dtype)
            for p in eqn.params.values():
                for sub in p if isinstance(p, (tuple, list)) else (p,):
                    if hasattr(sub, "jaxpr") and hasattr(sub.jaxpr, "eqns"):
                        walk(sub.jaxpr)
                    elif hasattr(sub, "eqns"):
                        walk(sub)

    walk(jax.make_jaxpr(fn)(*args).jaxpr)
    return found


# --- the cast itself ------------------------------------------------------------------------------
def test_cast_dtypes_and_round_trip():
    m = _random_tb()
    m32 = cast_precision(m, "float32")
    assert m32.onsite.dtype == jnp.float32 and m32.hopping.dtype == jnp.complex64
    assert m32.hop_i.dtype == m.hop_i.dtype  # integers untouched
    assert tree_precision(m32) == "float32" and tree_precision(m) == "float64"
    back = cast_precision(m32, "float64")
    assert back.hopping.dtype == jnp.complex128
    assert_close(back.onsite, m.onsite, rtol=1e-7)


def test_unknown_precision_names_the_choices():
    with pytest.raises(ValueError, match="float32.*float64"):
        cast_precision(Haldane(), "bfloat16")
    assert PRECISIONS == ("float32", "float64")


def test_mesh_points_float32_weights_float64():
    m = Haldane()
    mesh32 = cast_precision(monkhorst_pack(m, (6, 6)), "float32")
    k, w = mesh32.all_points()
    assert k.dtype == jnp.float32 and w.dtype == jnp.float64
    # weights are exact: Σw = 1/V_cell (the BZ volume factor ∫d²k/(2π)² over the BZ).
    assert_close(jnp.sum(w), 1 / m.cell_volume(), rtol=1e-14)
    ex = cast_precision(ExplicitMesh(points=k.astype(jnp.float64), weights=w), "float32")
    assert ex.points.dtype == jnp.float32 and ex.weights.dtype == jnp.float64
    polar = cast_precision(qg.continuum_mesh(qg.models.MassiveDirac(), k_max=1.0, n=(4, 8)), "float32")
    assert polar.all_points()[0].dtype == jnp.float32


def test_hamiltonian_complex64_inside():
    for model in (Haldane(), QiWuZhang(), RashbaLattice(exchange=(0.1, 0.0, 0.2)), _random_tb()):
        m32 = cast_precision(model, "float32")
        k = jnp.asarray([0.3, -0.7], jnp.float32)
        assert m32.hamiltonian(k).dtype == jnp.complex64, type(model).__name__
        h, dh = hamiltonian_and_gradient(m32, k)
        assert h.dtype == dh.dtype == jnp.complex64
        spec = spectrum(m32, k)
        assert spec.energies.dtype == jnp.float32 and spec.vectors.dtype == jnp.complex64
        # float64 stays float64 (no silent downcast of the default path)
        assert hamiltonian_and_gradient(model, k.astype(jnp.float64))[0].dtype == jnp.complex128


def test_eigh_runs_in_complex64_in_the_responses():
    """Spy on the traced program: every LAPACK eigh of a 4-band float32 model gets complex64."""
    m = _random_tb()
    mesh = monkhorst_pack(m, (4, 4))
    m32, mesh32 = cast_precision(m, "float32"), cast_precision(mesh, "float32")
    mo = lambda mm, me: orbital_magnetization(mm, me, mu=0.0, temperature=0.05)
    d32 = _eigh_input_dtypes(mo, m32, mesh32)
    d64 = _eigh_input_dtypes(mo, m, mesh)
    assert d32 and all(d == jnp.complex64 for d in d32)
    assert d64 and all(d == jnp.complex128 for d in d64)
    assert orbital_magnetization(m32, mesh32, mu=0.0, temperature=0.05).dtype == jnp.float64


def test_working_precision_follows_model_or_points():
    m = Haldane()
    assert working_dtypes(m, jnp.zeros(2)) == (jnp.float64, jnp.complex128)
    assert working_dtypes(m, jnp.zeros(2, jnp.float32)) == (jnp.float32, jnp.complex64)
    assert working_dtypes(cast_precision(m, "float32"), jnp.zeros(2)) == (jnp.float32, jnp.complex64)


def test_function_model_with_double_constants_still_runs_in_complex64():
    """A user H(k) built from numpy complex128 constants is cast (safety net in ∂H and H)."""
    qwz = QiWuZhang()
    fm = from_function(lambda k, p: qwz.hamiltonian(k) * p["s"], {"s": 1.0}, dim=2, lattice=np.eye(2))
    f32 = cast_precision(fm, "float32")
    h, _ = hamiltonian_and_gradient(f32, jnp.asarray([0.1, 0.2], jnp.float32))
    assert h.dtype == jnp.complex64


# --- accuracy against float64 ---------------------------------------------------------------------
def _both(fn, model, shape):
    mesh = monkhorst_pack(model, shape)
    return np.asarray(fn(model, mesh)), np.asarray(fn(cast_precision(model, "float32"), cast_precision(mesh, "float32")))


def test_haldane_equilibrium_float32_accuracy():
    m = Haldane()
    mu = np.linspace(-1.5, 1.5, 7)
    a64, a32 = _both(lambda mm, me: orbital_magnetization(mm, me, mu=mu, temperature=0.02), m, (48, 48))
    assert_close(a32[:, 2], a64[:, 2], rtol=RTOL32, atol=RTOL32 * np.abs(a64).max())
    s64, s32 = _both(lambda mm, me: anomalous_hall_conductivity(mm, me, mu=mu, temperature=0.02), m, (48, 48))
    assert_close(s32, s64, rtol=RTOL32, atol=RTOL32 * np.abs(s64).max())
    # closed form: in the gap σ_xy = −C/(2π), and the Kubo Chern number of the lower band is ±1.
    c64, c32 = _both(lambda mm, me: chern_number_kubo(mm, me, [0]), m, (48, 48))
    assert abs(abs(c32) - 1) < RTOL32 and abs(c32 - c64) < RTOL32


def test_rashba_spin_responses_float32_accuracy():
    m = RashbaLattice(alpha=0.5, exchange=(0.2, 0.1, 0.3))
    kw = dict(mu=-0.5, temperature=0.1)
    cases = [("spin", "extrinsic"), ("spin", "intrinsic"), ("orbital", "extrinsic"), ("orbital", "intrinsic")]
    for part, mech in cases:
        extra = dict(tau=2.0) if mech == "extrinsic" else {}

        def fn(mm, me, part=part, mech=mech, extra=extra):
            return kinetic_magnetization(mm, me, part=part, mechanism=mech, **kw, **extra)

        x64, x32 = _both(fn, m, (32, 32))
        assert x32.dtype == np.float64
        assert_close(x32, x64, rtol=0, atol=RTOL32 * np.abs(x64).max(), what=f"{part} {mech}")
    ms64, ms32 = _both(lambda mm, me: spin_magnetization(mm, me, **kw), m, (32, 32))
    assert_close(ms32, ms64, rtol=0, atol=RTOL32 * np.abs(ms64).max())


def test_random_tb_float32_accuracy():
    m = _random_tb(4, spin=True)
    o64, o32 = _both(lambda mm, me: kinetic_magnetization(mm, me, mu=0.0, temperature=0.1, part="orbital", mechanism="intrinsic"), m, (16, 16))
    assert_close(o32, o64, rtol=0, atol=RTOL32 * np.abs(o64).max())
    e64, e32 = _both(lambda mm, me: kinetic_magnetization(mm, me, mu=0.0, temperature=0.1, part="spin", mechanism="extrinsic", tau=1.0), m, (16, 16))
    assert_close(e32, e64, rtol=0, atol=RTOL32 * np.abs(e64).max())


def test_gradients_in_float32():
    """d M^O/d t2 in float32 agrees with float64 autodiff and with a float64 central difference."""
    mesh = monkhorst_pack(Haldane(), (24, 24))
    mesh32 = cast_precision(mesh, "float32")

    def mo(t2, precision, me):
        m = cast_precision(Haldane(t2=t2), precision)
        return orbital_magnetization(m, me, mu=0.1, temperature=0.05)[2]

    g32 = jax.grad(mo)(jnp.float32(0.15), "float32", mesh32)
    g64 = jax.grad(mo)(0.15, "float64", mesh)
    h = 1e-5
    fd = (mo(0.15 + h, "float64", mesh) - mo(0.15 - h, "float64", mesh)) / (2 * h)
    assert np.isfinite(g32) and g32.dtype == jnp.float32
    assert_close(g64, fd, rtol=1e-6)
    assert_close(g32, g64, rtol=RTOL32)
