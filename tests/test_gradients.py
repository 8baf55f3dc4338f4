"""Gradients through the whole pipeline: autodiff against finite differences, forward vs reverse.

Reference (second route) for every derivative: the central finite difference with Richardson
extrapolation, f'(x) ≈ [8(f(x+h) − f(x−h)) − (f(x+2h) − f(x−2h))]/(12h), truncation error O(h⁴)
(Abramowitz & Stegun 25.3.6), round-off ~ ε·|f|/h. With h = 1e-4 both are < 1e-10 relative for the
smooth (T > 0, or μ in a gap) mesh sums used here, so a 1e-6 relative tolerance is a real check.
Complex parameters are perturbed along their real and imaginary parts separately.

Other identities checked: forward (jvp/jacfwd) = reverse (vjp/grad) mode, the dot-product test
⟨u, J v⟩ = ⟨Jᵀu, v⟩, grad of vmap = vmap of grad, and finite, correct gradients at EXACT band
degeneracies:

* a PT-symmetric 4-band model (Kramers pair at every k). PT (antiunitary, (PT)² = −1) makes the
  Berry curvature, orbital moment and ⟨S⟩ summed over each pair vanish, so M^O = M^S = σ_H = 0 for
  every PT-preserving parameter; the pair-summed quantum metric and the intrinsic (PT-even)
  responses are finite. The spin susceptibility dM^S/dJ at J = 0 of the insulator is a projector
  quantity (Tr P_occ S) and is exact even though J splits the pairs.
* a "doubled" Haldane model U (H ⊕ H) U† (a hidden unitary symmetry, every band exactly doubly
  degenerate, random basis mixing): every response is exactly twice the Haldane one, gradients too.

Known limitation, pinned by a strict xfail: a derivative with respect to a parameter that SPLITS an
exact degeneracy, evaluated exactly at the degenerate point, is wrong whenever the output weights
the members of the degenerate set differently to first order (Fermi-surface terms at T > 0, the
(μ − E_n)Ω_n term of M^O). The eigenvalue derivatives inside a degenerate set are the eigenvalues
of P dH P (degenerate perturbation theory), which no fixed eigenbasis can represent; the masked eigh
rule uses the diagonal of dH in LAPACK's basis. Evaluating a hair off the degenerate point
(splitting ≫ degen_tol) gives the correct derivative (tested).
"""

from __future__ import annotations

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import qgeo_jax  # noqa: F401  (x64 policy)
from qgeo_jax._bz import continuum_mesh, monkhorst_pack
from qgeo_jax._chern import chern_number
from qgeo_jax._geometry import band_geometry
from qgeo_jax._kinetic import kinetic_magnetization
from qgeo_jax._responses import (
    anomalous_hall_conductivity,
    orbital_magnetization,
    spin_magnetization,
)
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
from qgeo_jax.models._base import AbstractModel, as_param


# --- helpers --------------------------------------------------------------------------------------
def richardson(f, x, h):
    """4-point central difference of f (any pytree of arrays) at x along the pytree direction h."""
    at = lambda s: f(jax.tree_util.tree_map(lambda a, b: a + s * b, x, h))
    fp1, fm1, fp2, fm2 = at(1.0), at(-1.0), at(2.0), at(-2.0)
    return jax.tree_util.tree_map(
        lambda a, b, c, d: (8 * (a - b) - (c - d)) / 12.0, fp1, fm1, fp2, fm2
    )


def rel_err(actual, expected, floor=1e-300):
    """max |a − e| / max(max |e|, floor) over the array (norm-wise relative error).

    ``floor`` is the size below which a derivative counts as zero (round-off of the finite
    difference of a parameter-independent output is ~1e-13 times the output, not 0).
    """
    actual, expected = np.asarray(actual), np.asarray(expected)
    return np.max(np.abs(actual - expected)) / max(np.max(np.abs(expected)), floor)


def random_direction(params, rng, scale, *, imaginary=False):
    """Random tangent with each leaf's shape; complex leaves get a real (or imaginary) direction."""

    def leaf(x):
        d = rng.standard_normal(x.shape) * scale * np.maximum(1.0, np.abs(np.asarray(x)))
        if jnp.iscomplexobj(x):
            return jnp.asarray(1j * d if imaginary else d + 0j, dtype=x.dtype)
        return jnp.asarray(0.0 * d if imaginary else d, dtype=x.dtype)

    return jax.tree_util.tree_map(leaf, params)


# Derivatives smaller than this (output units per unit parameter) count as zero: the finite
# difference of an output that does not depend on a parameter is round-off, ε·Σ|terms|/h ~ 1e-12
# for an O(1) mesh sum, not 0 (so zero derivatives are checked to an absolute 1e-11).
ZERO = 1e-5


def tree_vdot(a, b):
    """Σ Re(a·b) over two pytrees: JAX's pairing of cotangents and tangents. (For a complex leaf
    JAX's cotangent is ∂L/∂x − i∂L/∂y, so dL = Re(cotangent · dz), without a conjugate.)"""
    parts = jax.tree_util.tree_map(lambda x, y: jnp.sum(jnp.real(x * y)), a, b)
    return sum(jax.tree_util.tree_leaves(parts))


# --- 1. Haldane M^O w.r.t. t2 and φ (the named check) -------------------------------------
HALDANE_MESH = (30, 30)
MUS = jnp.array([0.0, 0.35, -0.6])  # in the gap (T = 0 is smooth there) and in the bands (T > 0)


@functools.cache
def _haldane_mo():
    base = Haldane(t1=-1.0, t2=0.15, phi=1.1, delta=0.2)
    mesh = monkhorst_pack(base, HALDANE_MESH)

    @jax.jit
    def mo(x):
        model = eqx.tree_at(lambda m: (m.t2, m.phi), base, (x[0], x[1]))
        gap = orbital_magnetization(model, mesh, mu=0.0, temperature=0.0)[None, 2]
        metal = orbital_magnetization(model, mesh, mu=MUS[1:], temperature=0.05)[:, 2]
        return jnp.concatenate([gap, metal])

    return mo, jnp.array([0.15, 1.1])


def test_haldane_orbital_magnetization_gradient_matches_finite_differences():
    mo, x = _haldane_mo()
    jac_rev = jax.jit(jax.jacrev(mo))(x)  # (3 μ-values, 2 parameters)
    for p in range(2):
        e = jnp.zeros(2).at[p].set(1e-4)
        fd = richardson(mo, x, e) / 1e-4
        for i in range(3):
            assert abs(jac_rev[i, p] - fd[i]) <= 1e-6 * abs(fd[i]), (p, i, jac_rev[i, p], fd[i])
    # the derivatives are not trivially small: M^O depends on t2 and φ at every μ
    assert np.all(np.abs(np.asarray(jac_rev)) > 1e-3)


# --- 2. every public output × every array field, forward and reverse mode -------------------------
def _spin_matrices(n_orb):
    return np.array([np.kron(np.eye(n_orb // 2), p) for p in PAULI]) / 2


def _tight_binding():
    # Three orbitals (one spinful pair + one spinless) would not have a spin operator; use four
    # orbitals = two sites × spin, with complex spin-orbit hoppings and displaced positions.
    sz = np.diag([1, -1])
    hops = []
    for s in range(2):
        hops += [
            (-1.0, 2 * 0 + s, 2 * 1 + s, (0, 0)),
            (-0.7, 2 * 1 + s, 2 * 0 + s, (1, 0)),
            (-0.5, 2 * 1 + s, 2 * 0 + s, (0, 1)),
        ]
        for site in range(2):
            phase = 0.3j * sz[s, s] * (1 if site == 0 else -1)
            hops += [
                (0.1 + phase, 2 * site + s, 2 * site + s, (1, 0)),
                (0.1 - phase, 2 * site + s, 2 * site + s, (0, 1)),
            ]
    hops += [(0.2j, 0, 3, (0, 0)), (0.15 + 0.1j, 1, 2, (1, 0))]  # spin-flip (Rashba-like) terms
    return TightBinding(
        lattice=[[1.0, 0.0], [0.3, 1.1]],
        positions=[[0, 0], [0, 0], [0.45, 0.55], [0.45, 0.55]],
        onsite=[0.3, 0.3, -0.3, -0.3],
        hoppings=hops,
        spin=_spin_matrices(4),
    )


def _function_model():
    def h(k, p):
        d = jnp.stack(
            [
                p["a"] * jnp.sin(k[0]),
                p["a"] * jnp.sin(k[1]),
                p["m"] + jnp.cos(k[0]) + p["b"] * jnp.cos(k[1]),
            ]
        )
        return p["e0"] * jnp.cos(k[0] - k[1]) * jnp.eye(2) + jnp.einsum(
            "a,aij->ij", d, jnp.asarray(PAULI)
        )

    return from_function(
        h, {"a": 1.0, "m": 0.8, "b": 0.9, "e0": 0.2}, dim=2, lattice=np.eye(2), spin=PAULI / 2
    )


# (name, builder, lattice?, μ in the bands, T); small meshes: smoothness, not convergence, matters.
MODELS = {
    "MassiveDirac": (lambda: MassiveDirac(v=1.0, m=0.3, tilt=(0.2, -0.1)), False, 0.6, 0.1),
    "Haldane": (lambda: Haldane(t1=-1.0, t2=0.15, phi=1.1, delta=0.2), True, 0.4, 0.1),
    "QiWuZhang": (lambda: QiWuZhang(u=-1.2, t=1.0), True, 0.5, 0.1),
    "Rashba": (lambda: Rashba(mass=0.5, alpha=0.6, exchange=(0.1, 0.05, 0.2)), False, 0.5, 0.1),
    "RashbaLattice": (
        lambda: RashbaLattice(t=1.0, alpha=0.6, exchange=(0.1, 0.05, 0.3), onsite=0.1),
        True,
        -2.0,
        0.2,
    ),
    "TightBinding": (_tight_binding, True, 0.1, 0.2),
    "FunctionModel": (_function_model, True, 0.3, 0.1),
    "TightBinding-full": (_tight_binding, True, 0.1, 0.2),
}


def _mesh_for(model, lattice):
    if lattice:
        return monkhorst_pack(model, (12, 12), shift=0.5)
    return continuum_mesh(model, k_max=3.0, n=(24, 16))


def _all_outputs(model, lattice, mu, temperature, *, intrinsic_orbital=True):
    """Every public differentiable output of qgeo_jax for this model, as a dict of arrays."""
    # The lattice mesh is built from the model inside the function, so derivatives with respect to
    # lattice vectors move the Brillouin zone with them (the physical strain derivative).
    mesh = _mesh_for(model, lattice)
    mus = jnp.array([mu, mu + 0.15])
    geo = band_geometry(model, jnp.array([0.31, -0.47]))
    out = {
        "energies": geo.energies,
        "velocity": geo.velocity,
        "berry_curvature": geo.berry_curvature,
        "quantum_metric": geo.quantum_metric,
        "orbital_moment": geo.orbital_moment,
        "M_orb": orbital_magnetization(model, mesh, mu=mus, temperature=temperature),
        "AHC": anomalous_hall_conductivity(model, mesh, mu=mus, temperature=temperature),
        "orbital_extrinsic": kinetic_magnetization(
            model,
            mesh,
            mu=mus,
            temperature=temperature,
            part="orbital",
            mechanism="extrinsic",
            tau=2.0,
        ),
    }
    if intrinsic_orbital:
        out["orbital_intrinsic"] = kinetic_magnetization(
            model, mesh, mu=mus, temperature=temperature, part="orbital", mechanism="intrinsic"
        )
    if model.spin_operators() is not None:
        out["spin"] = geo.spin
        out["M_spin"] = spin_magnetization(model, mesh, mu=mus, temperature=temperature)
        out["edelstein"] = kinetic_magnetization(
            model,
            mesh,
            mu=mus,
            temperature=temperature,
            part="spin",
            mechanism="extrinsic",
            tau=2.0,
        )
        out["spin_intrinsic"] = kinetic_magnetization(
            model, mesh, mu=mus, temperature=temperature, part="spin", mechanism="intrinsic"
        )
    if lattice:
        out["chern_kubo"] = chern_number(model, mesh, [0])
    return out


# One model in the default run — a complex 4-band spinful tight-binding model with displaced
# orbitals and a sheared lattice, i.e. every kind of field — and the rest in the slow job (the test
# is compile-bound: ~25 s of CPU per model).
DEFAULT_MATRIX = (
    "TightBinding",
)  # its slow twin "TightBinding-full" adds the intrinsic orbital part


@pytest.mark.parametrize(
    "name", [n if n in DEFAULT_MATRIX else pytest.param(n, marks=pytest.mark.slow) for n in MODELS]
)
def test_every_output_every_field_forward_reverse_and_finite_differences(name, rng):
    build, lattice, mu, temperature = MODELS[name]
    model = build()
    params, static = eqx.partition(model, eqx.is_inexact_array)
    # The intrinsic orbital response (the most expensive to compile) has its own default-run
    # gradient tests below; in the matrix it runs in the slow job.
    full = name not in DEFAULT_MATRIX
    f = lambda p: _all_outputs(
        eqx.combine(p, static), lattice, mu, temperature, intrinsic_orbital=full
    )
    # Two compiled programs per model: the jvp (whose primal output also serves the finite
    # differences) and the vjp.
    jvp = jax.jit(lambda p, t: jax.jvp(f, (p,), (t,)))
    vjp = jax.jit(lambda p, c: jax.vjp(f, p)[1](c)[0])
    out0, _ = jvp(params, params)
    directions = [random_direction(params, rng, 1.0)]
    if any(jnp.iscomplexobj(x) for x in jax.tree_util.tree_leaves(params)):
        directions.append(random_direction(params, rng, 1.0, imaginary=True))
    for direction in directions:
        _, tangent = jvp(params, direction)
        h = 1e-4
        primal = functools.partial(lambda p, t: jvp(p, t)[0], t=direction)
        fd = richardson(primal, params, jax.tree_util.tree_map(lambda d: 1e-4 * d, direction))
        for key in out0:
            t, d = np.asarray(tangent[key]), np.asarray(fd[key]) / h
            assert np.all(np.isfinite(t)), (name, key)
            assert rel_err(t, d, ZERO) < 1e-6, (name, key, rel_err(t, d, ZERO))
        # dot-product test: reverse mode is the transpose of forward mode.
        cot = jax.tree_util.tree_map(
            lambda y: jnp.asarray(rng.standard_normal(y.shape), y.dtype), out0
        )
        pullback = vjp(params, cot)
        lhs, rhs = tree_vdot(cot, tangent), tree_vdot(pullback, direction)
        assert abs(lhs - rhs) <= 1e-9 * max(abs(lhs), 1e-12), (name, lhs, rhs)


# --- 3. named physics gradients: Edelstein (α, exchange), intrinsic orbital (mass) ----------------
def test_rashba_edelstein_gradient_wrt_alpha_and_exchange():
    """Edelstein tensor of the magnetic Rashba gas, d/dα and d/dJ (all three components)."""
    base = Rashba(mass=0.5, alpha=0.5, exchange=(0.05, -0.03, 0.1))
    mesh = continuum_mesh(base, k_max=3.0, n=(96, 48))
    mus = jnp.array([0.3, -0.05])  # above and below the band crossing

    @jax.jit
    def edelstein(x):
        model = eqx.tree_at(lambda m: (m.alpha, m.exchange), base, (x[0], x[1:]))
        a = kinetic_magnetization(
            model, mesh, mu=mus, temperature=0.05, part="spin", mechanism="extrinsic", tau=1.0
        )
        return a[:, :2, :2].reshape(-1)

    x = jnp.array([0.5, 0.05, -0.03, 0.1])
    jac = jax.jacrev(edelstein)(x)
    assert np.allclose(jac, jax.jacfwd(edelstein)(x), rtol=1e-11, atol=1e-14)
    for p in range(4):
        fd = richardson(edelstein, x, jnp.zeros(4).at[p].set(1e-4)) / 1e-4
        assert rel_err(jac[:, p], fd) < 1e-6, (p, rel_err(jac[:, p], fd))
    # the response depends on α: ∂α^{yx}/∂α ≠ 0 (Edelstein: α^{yx} ∝ α m* τ above the crossing)
    assert abs(jac[2, 0]) > 1e-3


def _broken_symmetry_dirac_lattice():
    """Two-band lattice model whose intrinsic orbital response δM_z ∝ E is allowed (no C_n, no
    mirrors)."""

    def h(k, p):
        d = jnp.stack(
            [
                jnp.sin(k[0]) + 0.3 * jnp.sin(k[1]),
                0.8 * jnp.sin(k[1]),
                p["mass"] + jnp.cos(k[0]) + 0.7 * jnp.cos(k[1]),
            ]
        )
        d0 = 0.3 * jnp.sin(k[0]) + 0.2 * jnp.cos(k[1] + 0.4)
        return d0 * jnp.eye(2) + jnp.einsum("a,aij->ij", d, jnp.asarray(PAULI))

    return from_function(h, {"mass": 1.0}, dim=2, lattice=np.eye(2))


def test_intrinsic_orbital_response_gradient_wrt_mass():
    base = _broken_symmetry_dirac_lattice()
    mesh = monkhorst_pack(base, (24, 24), shift=0.5)

    @jax.jit
    def alpha(mass):
        model = eqx.tree_at(lambda m: m.params["mass"], base, mass)
        gap = kinetic_magnetization(
            model, mesh, mu=0.0, temperature=0.0, part="orbital", mechanism="intrinsic"
        )
        metal = kinetic_magnetization(
            model, mesh, mu=1.2, temperature=0.1, part="orbital", mechanism="intrinsic"
        )
        return jnp.concatenate([gap.reshape(-1), metal.reshape(-1)])

    m0 = jnp.asarray(1.0)
    g = jax.jacrev(alpha)(m0)
    fd = richardson(alpha, m0, jnp.asarray(1e-4)) / 1e-4
    assert np.all(np.isfinite(g))
    assert rel_err(g, fd) < 1e-6
    assert np.max(np.abs(np.asarray(g))) > 1e-4  # a non-trivial derivative


# --- 4. exact degeneracies ------------------------------------------------------------------------
_TAU, _SIGMA = PAULI, PAULI
# Five mutually anticommuting 4×4 matrices, each even under PT = (1 ⊗ iσ_y) K, (PT)² = −1:
# τ_x, τ_z, τ_y σ_x, τ_y σ_y, τ_y σ_z (orbital τ ⊗ spin σ). Any H = d0 + Σ d_a Γ_a is then
# Kramers-degenerate at every k, E = d0 ± |d|.
_GAMMA = np.array(
    [np.kron(_TAU[0], np.eye(2)), np.kron(_TAU[2], np.eye(2))]
    + [np.kron(_TAU[1], s) for s in _SIGMA]
)
_SPIN4 = np.array([np.kron(np.eye(2), s) for s in _SIGMA]) / 2  # PT-odd


class PTModel(AbstractModel):
    """PT-symmetric 4-band square-lattice model (Kramers pairs everywhere) plus a PT-breaking
    exchange field J·S. Gapped (|d| ≥ 0.5 > 2|t0|·... at the defaults)."""

    m: jax.Array
    t1: jax.Array
    t0: jax.Array
    delta: jax.Array
    t3: jax.Array
    lam: jax.Array
    lamz: jax.Array
    exchange: jax.Array

    def __init__(
        self, m=1.5, t1=0.5, t0=0.2, delta=0.3, t3=0.4, lam=0.6, lamz=0.3, exchange=(0.0, 0.0, 0.0)
    ):
        self.m, self.t1, self.t0, self.delta = (
            as_param(m),
            as_param(t1),
            as_param(t0),
            as_param(delta),
        )
        self.t3, self.lam, self.lamz, self.exchange = (
            as_param(t3),
            as_param(lam),
            as_param(lamz),
            as_param(exchange),
        )

    @property
    def dim(self):
        return 2

    @property
    def lattice(self):
        return jnp.eye(2)

    def spin_operators(self):
        return jnp.asarray(_SPIN4)

    def hamiltonian(self, k):
        c, s = jnp.cos(k), jnp.sin(k)
        d = jnp.stack(
            [
                self.m + self.t1 * (c[0] + c[1]),
                self.delta + self.t3 * s[0],
                self.lam * s[1],
                -self.lam * s[0],
                self.lamz * jnp.sin(k[0] + k[1]),
            ]
        )
        h = -self.t0 * (c[0] + c[1]) * jnp.eye(4) + jnp.einsum("a,aij->ij", d, jnp.asarray(_GAMMA))
        return h + jnp.einsum("a,aij->ij", self.exchange, jnp.asarray(_SPIN4))


PT_FIELDS = ("m", "t1", "t0", "delta", "t3", "lam", "lamz")  # the PT-preserving parameters


def test_pt_model_is_kramers_degenerate_and_gapped():
    model = PTModel()
    k = jnp.asarray(np.random.default_rng(1).uniform(-np.pi, np.pi, (50, 2)))
    e = np.asarray(jax.vmap(lambda kk: jnp.linalg.eigvalsh(model.hamiltonian(kk)))(k))
    assert np.max(np.abs(e[:, 0] - e[:, 1])) < 1e-12 and np.max(np.abs(e[:, 2] - e[:, 3])) < 1e-12
    assert np.min(e[:, 2] - e[:, 1]) > 0.5


def test_pt_symmetric_gradients_finite_and_match_finite_differences():
    """PT-preserving parameters: the degeneracy survives every perturbation, and AD is exact."""
    base = PTModel()
    mesh = monkhorst_pack(base, (12, 12), shift=0.5)
    mus = jnp.array([0.0, 1.9])  # gap; inside the upper Kramers pair's band (metal)

    def outputs(x):
        model = eqx.tree_at(lambda m: tuple(getattr(m, f) for f in PT_FIELDS), base, tuple(x))
        geo = band_geometry(model, jnp.array([0.4, -1.1]))
        return {
            # pair-summed (degenerate-averaged) quantum metric and energies: finite and smooth
            "metric": geo.quantum_metric,
            "energies": geo.energies,
            # PT-odd responses vanish identically: gradients must be finite (and ~0)
            "M_orb": orbital_magnetization(model, mesh, mu=mus, temperature=0.1),
            "M_spin": spin_magnetization(model, mesh, mu=mus, temperature=0.1),
            # PT-even responses are finite: intrinsic spin (Φ) and intrinsic orbital
            "spin_intrinsic": kinetic_magnetization(
                model, mesh, mu=mus, temperature=0.1, part="spin", mechanism="intrinsic"
            ),
            "orbital_intrinsic": kinetic_magnetization(
                model, mesh, mu=mus, temperature=0.1, part="orbital", mechanism="intrinsic"
            ),
        }

    x = jnp.asarray([getattr(base, f) for f in PT_FIELDS])
    # reverse mode here; forward mode at degeneracies is checked on the doubled Haldane model.
    jac = jax.jit(jax.jacrev(outputs))(x)
    primal = jax.jit(outputs)
    for key in jac:
        assert np.all(np.isfinite(np.asarray(jac[key]))), key
    for p in range(len(PT_FIELDS)):
        fd = richardson(primal, x, jnp.zeros(len(x)).at[p].set(1e-4))
        for key in ("metric", "energies", "spin_intrinsic", "orbital_intrinsic"):
            d = np.asarray(fd[key]) / 1e-4
            assert rel_err(np.asarray(jac[key])[..., p], d, ZERO) < 1e-6, (PT_FIELDS[p], key)
        for key in ("M_orb", "M_spin"):
            assert np.max(np.abs(np.asarray(jac[key])[..., p])) < 1e-12, (PT_FIELDS[p], key)
    # non-trivial: the intrinsic spin response and the metric do depend on the parameters
    assert np.max(np.abs(np.asarray(jac["spin_intrinsic"]))) > 1e-3
    assert np.max(np.abs(np.asarray(jac["metric"]))) > 1e-2


def _pt_response(kind, mu, temperature, mesh_shape=(12, 12)):
    base = PTModel()
    mesh = monkhorst_pack(base, mesh_shape, shift=0.5)
    fn = spin_magnetization if kind == "spin" else orbital_magnetization

    @jax.jit
    def resp(jz):
        model = eqx.tree_at(lambda m: m.exchange, base, jnp.stack([0.0, 0.0, jz]))
        return fn(model, mesh, mu=mu, temperature=temperature)[2]

    return resp


def test_spin_susceptibility_of_pt_insulator_at_the_degenerate_point():
    """dM^S_z/dJ_z at J = 0 (Van Vleck susceptibility of the insulator): J splits every Kramers
    pair, but Σ_occ⟨S⟩ = Tr(P_occ S) depends on the occupied projector only, so AD is exact."""
    resp = _pt_response("spin", 0.0, 0.0)
    g = jax.grad(resp)(0.0)
    fd = richardson(resp, jnp.asarray(0.0), jnp.asarray(1e-4)) / 1e-4
    assert np.isfinite(g) and abs(g) > 1e-2
    assert abs(g - fd) < 1e-6 * abs(fd)


@pytest.mark.xfail(
    strict=True,
    reason="documented limitation: a degeneracy-splitting derivative exactly at the "
    "degenerate point misses the intra-set terms of degenerate perturbation theory",
)
@pytest.mark.parametrize(
    "kind, temperature", [("spin", 0.1), pytest.param("orbital", 0.0, marks=pytest.mark.slow)]
)
def test_degeneracy_splitting_derivative_at_the_degenerate_point(kind, temperature):
    resp = _pt_response(kind, 0.0, temperature)
    g = jax.grad(resp)(0.0)
    fd = richardson(resp, jnp.asarray(0.0), jnp.asarray(1e-4)) / 1e-4
    assert abs(g - fd) < 1e-6 * abs(fd)


@pytest.mark.parametrize(
    "kind, temperature", [("spin", 0.1), pytest.param("orbital", 0.0, marks=pytest.mark.slow)]
)
def test_degeneracy_splitting_derivative_a_hair_off_the_degenerate_point(kind, temperature):
    """The workaround: differentiate at a splitting ε ≫ degen_tol; the error is O(ε)."""
    resp = _pt_response(kind, 0.0, temperature)
    eps = 1e-5
    fd0 = richardson(resp, jnp.asarray(0.0), jnp.asarray(1e-4)) / 1e-4  # true derivative at J = 0
    g = jax.grad(resp)(eps)
    assert np.isfinite(g)
    assert abs(g - fd0) < 1e-4 * abs(fd0), (g, fd0)


class Doubled(AbstractModel):
    """U (H ⊕ H) U†: every band exactly doubly degenerate (hidden unitary symmetry). In the
    positions convention a k-independent unitary is a pure basis change, so the geometry of this
    model is that of H ⊕ H."""

    inner: AbstractModel
    unitary: jax.Array

    @property
    def dim(self):
        return self.inner.dim

    @property
    def lattice(self):
        return self.inner.lattice

    def hamiltonian(self, k):
        return (
            self.unitary
            @ jnp.kron(jnp.eye(2), self.inner.hamiltonian(k))
            @ jnp.conj(self.unitary.T)
        )


def _doubled(model, unitary):
    return Doubled(model, jnp.asarray(unitary))


def test_doubled_haldane_exact_degeneracy_twice_the_gradient(rng):
    """Second route at an exact (hidden-symmetry) degeneracy: d(2·M^O_Haldane) = d M^O_doubled."""
    z = rng.standard_normal((4, 4)) + 1j * rng.standard_normal((4, 4))
    unitary, _ = np.linalg.qr(z)
    base = Haldane(t1=-1.0, t2=0.15, phi=1.1, delta=0.2)
    mesh = monkhorst_pack(base, (12, 12))

    def single(x):
        model = eqx.tree_at(lambda m: (m.t2, m.phi), base, (x[0], x[1]))
        return jnp.concatenate(
            [
                orbital_magnetization(model, mesh, mu=0.0, temperature=0.0)[2:],
                orbital_magnetization(model, mesh, mu=0.4, temperature=0.1)[2:],
                anomalous_hall_conductivity(model, mesh, mu=0.4, temperature=0.1)[2:],
            ]
        )

    def doubled(x):
        model = _doubled(eqx.tree_at(lambda m: (m.t2, m.phi), base, (x[0], x[1])), unitary)
        return jnp.concatenate(
            [
                orbital_magnetization(model, mesh, mu=0.0, temperature=0.0)[2:],
                orbital_magnetization(model, mesh, mu=0.4, temperature=0.1)[2:],
                anomalous_hall_conductivity(model, mesh, mu=0.4, temperature=0.1)[2:],
            ]
        )

    x = jnp.array([0.15, 1.1])
    e = np.asarray(jnp.linalg.eigvalsh(_doubled(base, unitary).hamiltonian(jnp.array([0.2, 0.3]))))
    assert abs(e[0] - e[1]) < 1e-12  # exactly degenerate
    jd_f, out_d = jax.jit(jax.jacfwd(lambda y: (doubled(y), doubled(y)), has_aux=True))(x)
    js, out_s = jax.jit(jax.jacrev(lambda y: (single(y), single(y)), has_aux=True))(x)
    np.testing.assert_allclose(out_d, 2 * out_s, rtol=1e-10)
    assert np.all(np.isfinite(np.asarray(jd_f)))
    np.testing.assert_allclose(
        jd_f, 2 * js, rtol=1e-8
    )  # forward (degenerate) = 2 × reverse (plain)


# --- 5. transformation identities -----------------------------------------------------------------
def test_grad_of_vmap_equals_vmap_of_grad():
    base = QiWuZhang(u=-1.2, t=1.0)
    mesh = monkhorst_pack(base, (12, 12), shift=0.5)

    def mo(u):
        return orbital_magnetization(
            eqx.tree_at(lambda m: m.u, base, u), mesh, mu=0.3, temperature=0.1
        )[2]

    us = jnp.array([-1.5, -0.7, 0.4, 1.3])
    g_of_v = jax.jit(jax.grad(lambda u: jnp.sum(jax.vmap(mo)(u))))(us)
    v_of_g = jax.jit(jax.vmap(jax.grad(mo)))(us)
    np.testing.assert_allclose(g_of_v, v_of_g, rtol=1e-12)
    # and a point of the batch against central differences (the loop route is in test_sweep.py)
    fd = richardson(jax.jit(mo), us[1], jnp.asarray(1e-4)) / 1e-4
    assert abs(v_of_g[1] - fd) < 1e-6 * abs(fd)


# --- 6. cost of a gradient: time and memory (slow job; the numbers go to the README) --------------
def _eight_band():
    """Four sites × spin on a square lattice, random complex hoppings (fixed seed), 8 bands."""
    r = np.random.default_rng(7)
    hops = []
    for i in range(8):
        for j in range(8):
            for R in [(0, 0), (1, 0), (0, 1)]:
                if (i < j or R != (0, 0)) and r.random() < 0.5:
                    hops.append((complex(r.normal(0, 0.5), r.normal(0, 0.3)), i, j, R))
    pos = np.repeat(r.uniform(0, 1, (4, 2)), 2, axis=0)
    return TightBinding(
        lattice=np.eye(2),
        positions=pos,
        onsite=r.normal(0, 1, 8),
        hoppings=hops,
        spin=_spin_matrices(8),
    )


class _NoCheckpoint:
    """Stand-in for the ``jax`` module inside qgeo_jax._bz whose ``checkpoint`` does nothing."""

    def __getattr__(self, name):
        return getattr(jax, name)

    @staticmethod
    def checkpoint(fn, *args, **kwargs):
        return fn


def _grad_program(model, shape):
    mesh = monkhorst_pack(model, shape, shift=0.5)
    params, static = eqx.partition(model, eqx.is_inexact_array)

    def f(p):
        return jnp.sum(orbital_magnetization(eqx.combine(p, static), mesh, mu=0.1, temperature=0.1))

    return f, params


def gradient_memory(model, shape, *, checkpoint=True, monkeypatch=None):
    """XLA's temp buffer size (bytes) of the compiled reverse-mode gradient of M^O."""
    import qgeo_jax._bz as bz

    jax.clear_caches()
    if not checkpoint:
        monkeypatch.setattr(bz, "jax", _NoCheckpoint())
    try:
        f, params = _grad_program(model, shape)
        compiled = jax.jit(jax.grad(f)).lower(params).compile()
    finally:
        if not checkpoint:
            monkeypatch.undo()
        jax.clear_caches()
    return compiled.memory_analysis().temp_size_in_bytes


def gradient_timing(model, shape, repeat=5):
    """Steady-state seconds of forward, reverse-mode gradient and one forward-mode jvp."""
    import timeit

    f, params = _grad_program(model, shape)
    fwd, rev = jax.jit(f), jax.jit(jax.grad(f))
    direction = jax.tree_util.tree_map(jnp.ones_like, params)
    jvp = jax.jit(lambda p: jax.jvp(f, (p,), (direction,))[1])
    out = {}
    for name, fn in (("forward", fwd), ("grad", rev), ("jvp", jvp)):
        jax.block_until_ready(fn(params))  # compile
        out[name] = min(
            timeit.repeat(lambda fn=fn: jax.block_until_ready(fn(params)), number=1, repeat=repeat)
        )
    return out


@pytest.mark.slow
def test_reverse_mode_memory_is_independent_of_mesh_size(monkeypatch):
    rows = []
    for label, model, shapes in (
        ("2-band Haldane", Haldane(), [(64, 64), (128, 128), (256, 256)]),
        ("8-band TB", _eight_band(), [(32, 32), (64, 64), (128, 128)]),
    ):
        for shape in shapes:
            with_cp = gradient_memory(model, shape, checkpoint=True)
            without = gradient_memory(model, shape, checkpoint=False, monkeypatch=monkeypatch)
            rows.append((label, shape, with_cp, without))
            print(
                f"{label:15s} {shape[0]}x{shape[1]:<4d} temp with checkpoint {with_cp / 2**20:9.2f} MiB, "
                f"without {without / 2**20:9.2f} MiB"
            )
    for label in ("2-band Haldane", "8-band TB"):
        sub = [r for r in rows if r[0] == label]
        # 16× more k-points: checkpointed memory stays flat, the plain scan's grows ~linearly
        assert sub[-1][2] < 1.5 * sub[0][2]
        assert sub[-1][3] > 8 * sub[0][3]


@pytest.mark.slow
def test_gradient_cost_relative_to_forward():
    for label, model, shape in (
        ("2-band Haldane", Haldane(), (128, 128)),
        ("8-band TB", _eight_band(), (64, 64)),
    ):
        t = gradient_timing(model, shape)
        print(
            f"{label:15s} {shape}: forward {t['forward'] * 1e3:.1f} ms, grad {t['grad'] * 1e3:.1f} ms "
            f"(×{t['grad'] / t['forward']:.2f}), jvp {t['jvp'] * 1e3:.1f} ms (×{t['jvp'] / t['forward']:.2f})"
        )
        assert t["grad"] < 6 * t["forward"]
