"""Converters to and from TBmodels (D. Gresch et al., Phys. Rev. Materials 2, 103805 (2018),
doi:10.1103/PhysRevMaterials.2.103805; PyPI ``tbmodels``, tested against 1.4.3).

TBmodels is an optional peer, never a dependency: it is imported lazily and a missing install
gives an ImportError that says ``pip install tbmodels``.

Conventions (checked by tests/test_io_tbmodels.py against TBmodels' own ``hamilton``):

* ``model.hop[R][i, j]`` is ⟨i, 0|H|j, R⟩ for the R TBmodels keeps — only "positive" R (first
  non-zero component > 0) and R = 0 — with the Hermitian conjugate implied, and with the R = 0
  matrix stored *halved*: H(k) = Σ_R hop[R] e^{2πi k·R} + h.c. (reduced k). So the bond list is
  {(hop[R]_ij, i, j, R) : R > 0} ∪ {((hop[0] + hop[0]†)_ij, i, j, 0) : i < j} and the on-site
  energies are the real diagonal of hop[0] + hop[0]†.
* ``model.pos`` are reduced coordinates and ``model.uc`` has the lattice vectors as rows — the
  same layout as :class:`~qgeo_jax.models.TightBinding`.
* ``model.hamilton(k, convention=1)`` = e^{−2πik·τ_i} H_ij e^{2πik·τ_j}, i.e. phases
  e^{2πik·(R + τ_j − τ_i)}: this package's default ``"positions"`` convention (in which the Berry
  curvature and orbital moment from ∂_k H are physical). ``convention=2`` (TBmodels' default) is
  e^{2πik·R}, this package's ``"cell"`` convention. TBmodels' k is reduced; ours is Cartesian,
  k_cart = k_red @ reciprocal (rows b_i, a_i·b_j = 2π δ_ij).
"""

from __future__ import annotations

import numpy as np

from ..models._tight_binding import TightBinding


def _import_tbmodels():
    try:
        import tbmodels  # noqa: PLC0415 — optional peer, imported only when asked for
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "TBmodels is not installed; the TBmodels converters need it: pip install tbmodels"
        ) from exc
    return tbmodels


def _dense(mat) -> np.ndarray:
    """A hopping matrix as a dense complex array (TBmodels may store scipy sparse matrices)."""
    if hasattr(mat, "toarray"):
        mat = mat.toarray()
    return np.asarray(mat, dtype=np.complex128)


def from_tbmodels(model, *, spin=None, convention: str = "positions") -> TightBinding:
    """A :class:`~qgeo_jax.models.TightBinding` from a ``tbmodels.Model``.

    The hopping table, reduced positions and unit cell are copied exactly (see the module
    docstring for the index and phase conventions). ``convention="positions"`` (default) gives
    TBmodels' ``hamilton(k, convention=1)``; ``"cell"`` gives its ``convention=2``. TBmodels
    carries no spin operators: pass ``spin`` (3, n, n) in units of ħ if the basis is spinful
    (e.g. :func:`~qgeo_jax.io.spinor_spin_operators`). Lengths keep TBmodels' units.
    """
    try:
        dim, size = int(model.dim), int(model.size)
        hop, pos, uc = model.hop, np.asarray(model.pos, dtype=np.float64), model.uc
    except AttributeError as exc:
        raise ValueError(
            f"from_tbmodels: {type(model).__name__} does not look like a tbmodels.Model ({exc})."
        ) from None
    if uc is None:
        raise ValueError(
            "from_tbmodels: the TBmodels model has no unit cell (uc=None); build it with uc=... "
            "(rows = lattice vectors) so k-space quantities have units."
        )
    if dim not in (1, 2, 3):
        raise ValueError(f"from_tbmodels: dimension must be 1-3, got {dim}.")
    zero = (0,) * dim
    onsite = np.zeros(size)
    bonds = []
    for R, mat in hop.items():
        R = tuple(int(r) for r in R)
        m = _dense(mat)
        if R == zero:
            # TBmodels keeps half of the Hermitian R = 0 block; the full block is m + m†.
            full = m + m.conj().T
            onsite += full.diagonal().real
            rows, cols = np.nonzero(np.triu(full, k=1))
            bonds += [
                (complex(full[i, j]), int(i), int(j), R) for i, j in zip(rows, cols, strict=True)
            ]
            continue
        first = next(r for r in R if r != 0)
        if first < 0:  # not produced by TBmodels itself; map −R onto R so each bond appears once
            R, m = tuple(-r for r in R), m.conj().T
        rows, cols = np.nonzero(m)
        bonds += [(complex(m[i, j]), int(i), int(j), R) for i, j in zip(rows, cols, strict=True)]
    if not bonds:
        raise ValueError("from_tbmodels: the model has no hoppings.")
    # Merge bonds that a non-canonical hop dict (R and −R both present) gave twice.
    merged: dict[tuple, complex] = {}
    for t, i, j, R in bonds:
        key, conj = (i, j, R), (j, i, tuple(-r for r in R))
        if conj in merged and key not in merged:
            merged[conj] += np.conj(t)
        else:
            merged[key] = merged.get(key, 0.0) + t
    table = [(t, i, j, R) for (i, j, R), t in merged.items()]
    return TightBinding(
        np.asarray(uc, dtype=np.float64), pos, onsite, table, spin=spin, convention=convention
    )


def to_tbmodels(tb: TightBinding, *, occ: int | None = None):
    """A ``tbmodels.Model`` with the hopping table, reduced positions and lattice of ``tb``.

    TBmodels maps orbital positions into the home cell [0, 1)^d and shifts the R of the bonds
    accordingly, so ``hamilton(k, convention=1)`` reproduces ``tb.hamiltonian`` exactly (reduced
    k); spin operators are not carried over.
    """
    tbmodels = _import_tbmodels()
    if not isinstance(tb, TightBinding):
        raise TypeError(f"to_tbmodels: expected a TightBinding model, got {type(tb).__name__}.")
    n, dim = tb.norb, tb.dim
    # Dense matrices without the conjugates (contains_cc=False): TBmodels adds h.c. itself and
    # halves the R = 0 block. (Its from_hop_list builds its own sparse type, which warns under
    # numpy 2, so the dict is built here.)
    hop: dict[tuple, np.ndarray] = {}
    for t, i, j, R in zip(
        np.asarray(tb.hopping),
        np.asarray(tb.hop_i),
        np.asarray(tb.hop_j),
        np.asarray(tb.hop_R),
        strict=True,
    ):
        key = tuple(int(r) for r in R)
        hop.setdefault(key, np.zeros((n, n), dtype=np.complex128))[int(i), int(j)] += complex(t)
    return tbmodels.Model(
        hop=hop,
        size=n,
        dim=dim,
        on_site=[float(e) for e in np.asarray(tb.onsite)],
        pos=np.asarray(tb.reduced_positions, dtype=np.float64),
        uc=np.asarray(tb.lattice_vectors, dtype=np.float64),
        occ=occ,
        contains_cc=False,
    )
