r"""Wannier90 tight-binding files: ``seedname_hr.dat``, ``_tb.dat``, ``_centres.xyz``.

Wannier90 (Pizzi et al., J. Phys.: Condens. Matter 32, 165902 (2020), doi:10.1088/1361-648X/ab51ff)
writes the real-space Hamiltonian of maximally localised Wannier functions (Marzari & Vanderbilt,
PRB 56, 12847 (1997), doi:10.1103/PhysRevB.56.12847),

.. math:: H_{mn}(\mathbf R) = \langle m\mathbf 0|H|n\mathbf R\rangle ,

on a Wigner–Seitz set of lattice vectors R, each with an integer degeneracy weight N_R. The Bloch
Hamiltonian is H_mn(k) = Σ_R e^{ik·R} H_mn(R)/N_R ("cell" convention, periodic in k). When the
Wannier centres τ_n are known, this package builds the model in its own "positions" convention
H_mn(k) = Σ_R e^{ik·(R + τ_n − τ_m)} H_mn(R)/N_R instead: same bands, eigenvectors differing by
diag(e^{ik·τ}), and ∂_k H then contains the intra-cell (diagonal) position operator, which the Berry
curvature, orbital moment and magnetization need (Wang et al., PRB 74, 195118 (2006),
doi:10.1103/PhysRevB.74.195118, tight-binding approximation to the position operator:
⟨m0|r|nR⟩ ≈ τ_n δ_mn δ_R0; the off-diagonal position matrix elements are not used).

Formats (whitespace-separated, Fortran order: the row index m runs fastest):

* ``_hr.dat``: header line; num_wann; nrpts; the N_R, 15 per line; then nrpts·num_wann² lines
  ``R1 R2 R3 m n Re Im`` (m, n 1-based). No lattice, no centres: pass ``lattice=`` (rows, length
  units, usually Å) and optionally ``positions=`` (Cartesian centres, e.g. from
  :func:`read_centres_xyz`).
* ``_tb.dat``: header line; three lattice-vector lines (Å); num_wann; nrpts; the N_R; then for
  each R a line ``R1 R2 R3`` followed by num_wann² lines ``m n Re Im`` of H; then the same
  blocks with ``m n Re(x) Im(x) Re(y) Im(y) Re(z) Im(z)`` of ⟨m0|r|nR⟩ (Å). The centres are the
  diagonal of the R = 0 position block.

Parsing is strict (every count, index and number is checked; errors name the file and the line) and
never evaluates content (no pickle, no eval). Lower-dimensional models: a slab or wire calculation
has R = 0 along its non-periodic lattice directions; when every R vanishes along the trailing
lattice vectors and those are orthogonal to the others, the model is returned with the lower
dimension (per-area outputs for a monolayer). ``dim=`` overrides this.

Spinor Wannier functions: ``spin_ordering="interleaved"`` means (orbital 1 ↑, orbital 1 ↓,
orbital 2 ↑, ...), the order Wannier90 gives each spinor projection; ``"blocks"`` means all ↑
then all ↓ (as some DFT interfaces produce). The spin operators are S = σ/2 (units of ħ) along
the Cartesian axes, i.e. a spin quantization axis along z — check the projections of your
calculation.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..models._base import PAULI
from ..models._tight_binding import TightBinding

_HERMITIAN_RTOL = 1e-6  # Wannier90 prints H(R) with ~8 significant digits
_SPIN_ORDERINGS = ("interleaved", "blocks")


# ------------------------------------------------------------------------------------------------
# line reader with file/line-numbered errors
# ------------------------------------------------------------------------------------------------
class _Reader:
    """Sequential reader over the lines of a text file; every error names file and line."""

    def __init__(self, path):
        self.path = os.fspath(path)
        self.name = os.path.basename(self.path)
        try:
            with open(self.path, encoding="utf-8", errors="strict") as fh:
                self.lines = fh.read().splitlines()
        except UnicodeDecodeError as exc:
            raise ValueError(
                f"{self.name}: not a text file ({exc.reason} at byte {exc.start})."
            ) from None
        self.pos = 0

    def error(self, lineno: int, msg: str) -> ValueError:
        return ValueError(f"{self.name} line {lineno}: {msg}")

    def next_line(self, what: str, *, skip_blank: bool = True) -> tuple[int, str]:
        while self.pos < len(self.lines):
            line = self.lines[self.pos]
            self.pos += 1
            if line.strip() or not skip_blank:
                return self.pos, line
        raise self.error(len(self.lines) + 1, f"file ends early; expected {what}.")

    def numbers(self, count: int, what: str, kind=float) -> tuple[int, list]:
        lineno, line = self.next_line(what)
        tokens = line.split()
        if len(tokens) != count:
            raise self.error(
                lineno, f"expected {count} number{'s' * (count != 1)} ({what}), got {len(tokens)}."
            )
        return lineno, [_parse(tok, kind, self, lineno, what) for tok in tokens]

    def block(self, nlines: int, ncols: int, what: str) -> tuple[np.ndarray, np.ndarray]:
        """The next ``nlines`` non-blank lines as floats (nlines, ncols), with line numbers."""
        rows, linenos = [], []
        while len(rows) < nlines:
            lineno, line = self.next_line(f"{nlines} lines of {what} (got {len(rows)})")
            tokens = line.split()
            if len(tokens) != ncols:
                raise self.error(lineno, f"expected {ncols} numbers ({what}), got {len(tokens)}.")
            rows.append(tokens)
            linenos.append(lineno)
        try:
            data = np.array(rows, dtype=np.float64)
        except ValueError:
            for lineno, tokens in zip(linenos, rows, strict=True):
                for tok in tokens:
                    _parse(tok, float, self, lineno, what)
            raise  # unreachable: one token above failed
        linenos = np.asarray(linenos)
        bad = ~np.isfinite(data).all(axis=1)
        if bad.any():
            raise self.error(int(linenos[bad][0]), f"non-finite number in {what}.")
        return data, linenos

    def expect_end(self):
        while self.pos < len(self.lines):
            lineno, line = self.pos + 1, self.lines[self.pos]
            self.pos += 1
            if line.strip():
                raise self.error(lineno, "unexpected extra content after the last expected block.")


def _parse(tok: str, kind, reader: _Reader, lineno: int, what: str):
    try:
        value = float(tok)
    except ValueError:
        raise reader.error(lineno, f"{tok!r} is not a number ({what}).") from None
    if not np.isfinite(value):
        raise reader.error(lineno, f"non-finite number {tok!r} ({what}).")
    if kind is int:
        if value != int(value) or any(c in tok for c in ".eE"):
            raise reader.error(lineno, f"{tok!r} is not an integer ({what}).")
        return int(value)
    return value


def _check_integer_columns(reader: _Reader, data: np.ndarray, linenos: np.ndarray, cols, what: str):
    sub = data[:, cols]
    bad = (sub != np.round(sub)).any(axis=1)
    if bad.any():
        raise reader.error(int(linenos[bad][0]), f"{what} must be integers.")
    return np.round(sub).astype(np.int64)


def _read_degeneracies(reader: _Reader, nrpts: int) -> np.ndarray:
    """N_R written 15 per line (Fortran format 15I5), the last line holding the remainder."""
    weights = []
    while len(weights) < nrpts:
        expected = min(15, nrpts - len(weights))
        _, nums = reader.numbers(
            expected, f"degeneracy weights, 15 per line, {nrpts} in all", kind=int
        )
        weights.extend(nums)
    w = np.asarray(weights, dtype=np.int64)
    if (w < 1).any():
        raise ValueError(
            f"{reader.name}: degeneracy weights must be positive integers, got {w[w < 1][0]}."
        )
    return w


def _read_header_counts(reader: _Reader):
    lineno, _ = reader.next_line("the header line", skip_blank=False)
    ln, (num_wann,) = reader.numbers(1, "num_wann", kind=int)
    if num_wann < 1:
        raise reader.error(ln, f"num_wann must be positive, got {num_wann}.")
    ln, (nrpts,) = reader.numbers(1, "nrpts", kind=int)
    if nrpts < 1:
        raise reader.error(ln, f"nrpts must be positive, got {nrpts}.")
    return num_wann, nrpts


def _assemble(reader: _Reader, R, m, n, values, linenos, num_wann, nrpts, what="H"):
    """Dense (nrpts, num_wann, num_wann, ...) array from (R, m, n, value) rows, checked."""
    if ((m < 1) | (m > num_wann) | (n < 1) | (n > num_wann)).any():
        bad = np.flatnonzero((m < 1) | (m > num_wann) | (n < 1) | (n > num_wann))[0]
        raise reader.error(
            int(linenos[bad]),
            f"orbital indices ({m[bad]}, {n[bad]}) outside 1..num_wann = {num_wann}.",
        )
    rvecs, rindex = np.unique(R, axis=0, return_inverse=True)
    rindex = rindex.reshape(-1)
    if len(rvecs) != nrpts:
        raise ValueError(
            f"{reader.name}: the {what} blocks hold {len(rvecs)} distinct lattice vectors R "
            f"but nrpts = {nrpts}."
        )
    out = np.zeros((nrpts, num_wann, num_wann) + values.shape[1:], dtype=values.dtype)
    seen = np.zeros((nrpts, num_wann, num_wann), dtype=np.int64)
    np.add.at(seen, (rindex, m - 1, n - 1), 1)
    if (seen != 1).any():
        # Report a duplicate (which has line numbers) before a missing element.
        r, i, j = np.argwhere(seen > 1)[0] if (seen > 1).any() else np.argwhere(seen != 1)[0]
        count = seen[r, i, j]
        where = ""
        if count > 1:
            dup = np.flatnonzero((rindex == r) & (m - 1 == i) & (n - 1 == j))
            where = f" (lines {', '.join(str(int(linenos[d])) for d in dup[:3])})"
        raise ValueError(
            f"{reader.name}: {what} element (R={tuple(int(x) for x in rvecs[r])}, "
            f"m={i + 1}, n={j + 1}) "
            f"appears {count} times{where}; each must appear exactly once."
        )
    out[rindex, m - 1, n - 1] = values
    where = np.zeros((nrpts, num_wann, num_wann), dtype=np.int64)
    where[rindex, m - 1, n - 1] = linenos
    return rvecs, where, out


# ------------------------------------------------------------------------------------------------
# real-space data → TightBinding
# ------------------------------------------------------------------------------------------------
def spinor_spin_operators(num_wann: int, ordering: str = "interleaved") -> np.ndarray:
    """Spin operators S = σ/2 (units of ħ), shape (3, n, n), for a spinor Wannier basis.

    ``"interleaved"``: basis (1↑, 1↓, 2↑, 2↓, ...), S = 1_{n/2} ⊗ σ/2.
    ``"blocks"``: basis (1↑, 2↑, ..., 1↓, 2↓, ...), S = σ/2 ⊗ 1_{n/2}.
    """
    if ordering not in _SPIN_ORDERINGS:
        raise ValueError(f"spin_ordering must be one of {_SPIN_ORDERINGS}, got {ordering!r}.")
    if num_wann % 2:
        raise ValueError(
            f"a spinor basis needs an even number of Wannier functions, got {num_wann}."
        )
    eye = np.eye(num_wann // 2)
    half = PAULI / 2
    if ordering == "interleaved":
        return np.stack([np.kron(eye, s) for s in half])
    return np.stack([np.kron(s, eye) for s in half])


def _effective_dim(rvecs: np.ndarray, lattice: np.ndarray) -> int:
    """Drop trailing lattice directions with R = 0 throughout that are orthogonal to the others."""
    dim = 3
    while dim > 1 and not rvecs[:, dim - 1].any():
        kept, dropped = lattice[: dim - 1], lattice[dim - 1]
        if np.abs(kept @ dropped).max() > 1e-9 * np.abs(lattice).max() ** 2:
            break
        dim -= 1
    return dim


def _project(lattice: np.ndarray, dim: int, name: str) -> np.ndarray:
    """Lattice rows restricted to the first ``dim`` vectors and Cartesian components."""
    if dim == 3:
        return lattice
    extra = lattice[:dim, dim:]
    if np.abs(extra).max(initial=0.0) > 1e-9 * np.abs(lattice).max():
        raise ValueError(
            f"{name}: a {dim}D model needs its first {dim} lattice vectors in the first {dim} "
            f"Cartesian "
            f"coordinates (got {lattice[:dim].tolist()}); rotate the structure."
        )
    return lattice[:dim, :dim]


def tight_binding_from_real_space(
    rvecs,
    hamiltonian,
    lattice,
    *,
    positions=None,
    spin=None,
    spin_ordering: str | None = None,
    convention: str = "positions",
    dim: int | None = None,
    name: str = "model",
    hermitian_rtol: float = _HERMITIAN_RTOL,
    source_lines=None,
) -> TightBinding:
    r"""A :class:`~qgeo_jax.models.TightBinding` from the full set H_mn(R) = ⟨m0|H|nR⟩.

    ``rvecs`` (nR, 3) integers, ``hamiltonian`` (nR, n, n) complex — already divided by the
    degeneracy weights — containing H(−R) = H(R)† for every R (checked to ``hermitian_rtol``
    relative to max |H|; the Hermitian part is used). ``lattice`` (3, 3) rows in length units,
    ``positions`` (n, 3) Cartesian centres (default: all at the origin, where the "positions" and
    "cell" conventions coincide). TightBinding stores each bond once and adds its Hermitian
    conjugate, so the half set {R > 0} ∪ {R = 0, m < n} is kept (R > 0 lexicographically); the
    R = 0 diagonal becomes the on-site energies.
    """
    rvecs = np.asarray(rvecs, dtype=np.int64)
    ham = np.asarray(hamiltonian, dtype=np.complex128)
    lattice = np.asarray(lattice, dtype=np.float64)
    nR, n = ham.shape[0], ham.shape[1]
    if rvecs.shape != (nR, 3) or ham.shape != (nR, n, n):
        raise ValueError(
            f"{name}: need rvecs (nR, 3) and H (nR, n, n); got {rvecs.shape} and {ham.shape}."
        )
    if lattice.shape == (2, 2):
        lattice = np.block([[lattice, np.zeros((2, 1))], [np.zeros((1, 2)), np.ones((1, 1))]])
    if lattice.shape != (3, 3) or abs(np.linalg.det(lattice)) < 1e-12:
        raise ValueError(
            f"{name}: lattice must be 3 non-collinear row vectors (3, 3), got {lattice.tolist()}."
        )
    index = {tuple(r): i for i, r in enumerate(rvecs.tolist())}
    if len(index) != nR:
        raise ValueError(f"{name}: repeated lattice vectors R in the list.")
    if (0, 0, 0) not in index:
        raise ValueError(f"{name}: no R = (0, 0, 0) block (on-site terms).")
    partner = np.array([index.get(tuple(-x for x in r), -1) for r in rvecs.tolist()])
    if (partner < 0).any():
        bad = rvecs[np.flatnonzero(partner < 0)[0]]
        raise ValueError(
            f"{name}: R = {tuple(int(x) for x in bad)} is present but −R is not; "
            "H(−R) = H(R)† is needed."
        )
    herm = np.conj(np.swapaxes(ham[partner], 1, 2))
    scale = max(np.abs(ham).max(), 1e-300)
    err = np.abs(ham - herm).max()
    if err > hermitian_rtol * scale:
        r = np.unravel_index(np.argmax(np.abs(ham - herm)), ham.shape)
        where = ""
        if source_lines is not None:
            where = (
                f" line {source_lines[r]} (partner line {source_lines[partner[r[0]], r[2], r[1]]})"
            )
        raise ValueError(
            f"{name}{where}: H is not Hermitian: |H_mn(R) − H_nm(−R)*| = {err:.3g} at R = "
            f"{tuple(int(x) for x in rvecs[r[0]])}, m = {r[1] + 1}, n = {r[2] + 1} "
            f"(tolerance {hermitian_rtol:g} × max|H| = {hermitian_rtol * scale:.3g})."
        )
    ham = 0.5 * (ham + herm)

    dim = _effective_dim(rvecs, lattice) if dim is None else int(dim)
    if dim not in (1, 2, 3):
        raise ValueError(f"{name}: dim must be 1, 2 or 3, got {dim}.")
    if rvecs[:, dim:].any():
        raise ValueError(
            f"{name}: dim={dim} was asked for but some R have non-zero components "
            f"beyond axis {dim}."
        )
    lat = _project(lattice, dim, name)
    if positions is None:
        cart = np.zeros((n, 3))
    else:
        cart = np.asarray(positions, dtype=np.float64)
        if cart.ndim != 2 or cart.shape[0] != n or cart.shape[1] not in (dim, 3):
            raise ValueError(
                f"{name}: positions must be Cartesian (n={n}, 3) or (n, {dim}), got {cart.shape}."
            )
    reduced = cart[:, :dim] @ np.linalg.inv(lat)

    # Half set: R > 0 (first non-zero component positive), or R = 0 with m < n.
    rkeep = rvecs[:, :dim]
    sign = np.zeros(nR, dtype=np.int64)
    for ax in range(dim - 1, -1, -1):
        sign = np.where(rkeep[:, ax] != 0, np.sign(rkeep[:, ax]), sign)
    zero_r = index[(0, 0, 0)]
    iu, ju = np.triu_indices(n, 1)
    pos_r = np.flatnonzero(sign > 0)
    t_list = [ham[zero_r][iu, ju]]
    i_list, j_list, r_list = [iu], [ju], [np.zeros((iu.size, dim), dtype=np.int64)]
    if pos_r.size:
        rr, ii, jj = np.meshgrid(pos_r, np.arange(n), np.arange(n), indexing="ij")
        rr, ii, jj = rr.reshape(-1), ii.reshape(-1), jj.reshape(-1)
        t_list.append(ham[rr, ii, jj])
        i_list.append(ii)
        j_list.append(jj)
        r_list.append(rkeep[rr])
    t = np.concatenate(t_list)
    hi, hj, hR = np.concatenate(i_list), np.concatenate(j_list), np.concatenate(r_list)
    keep = t != 0
    t, hi, hj, hR = t[keep], hi[keep], hj[keep], hR[keep]
    onsite_c = np.diagonal(ham[zero_r])
    onsite = onsite_c.real

    if spin is not None and spin_ordering is not None:
        raise ValueError(
            f"{name}: give either spin= (explicit operators) or spin_ordering=, not both."
        )
    if spin_ordering is not None:
        spin = spinor_spin_operators(n, spin_ordering)
    return tight_binding_from_arrays(
        lat, reduced, onsite, t, hi, hj, hR, spin=spin, convention=convention
    )


def tight_binding_from_arrays(
    lattice, reduced_positions, onsite, t, i, j, R, *, spin=None, convention="positions"
):
    """Vectorised :class:`TightBinding` construction from a half set of bonds (no duplicate check).

    The public constructor validates bond by bond in Python, which is slow for Wannier90 models with
    10⁵–10⁶ bonds; here the arrays come from a canonical half set, so they are swapped into a
    one-bond model built by the constructor (which still validates lattice, positions, spin).
    """
    lattice = np.asarray(lattice, dtype=np.float64)
    dim = lattice.shape[0]
    t = np.asarray(t, dtype=np.complex128).reshape(-1)
    n = len(np.asarray(onsite).reshape(-1))
    if t.size == 0:
        # A model with on-site terms only: one zero bond keeps the arrays non-empty.
        t, i, j, R = np.zeros(1, np.complex128), [0], [0], np.eye(1, dim, dtype=np.int64)
    template = TightBinding(
        lattice,
        reduced_positions,
        onsite,
        [(0.0, 0, 0, (1,) + (0,) * (dim - 1))],
        spin=spin,
        convention=convention,
    )
    if n != template.onsite.shape[0]:  # pragma: no cover - TightBinding already checked
        raise ValueError("onsite / positions size mismatch.")
    return eqx.tree_at(
        lambda m: (m.hopping, m.hop_i, m.hop_j, m.hop_R),
        template,
        (
            jnp.asarray(t, dtype=jnp.complex128),
            jnp.asarray(np.asarray(i), dtype=jnp.int32),
            jnp.asarray(np.asarray(j), dtype=jnp.int32),
            jnp.asarray(np.asarray(R, dtype=np.int64).reshape(-1, dim), dtype=jnp.int32),
        ),
    )


def real_space_hamiltonian(model: TightBinding):
    """Full Wannier90-style set (R (nR, 3), H (nR, n, n)) of a TightBinding, R embedded in 3D.

    H(R) = ⟨m0|H|nR⟩ collects each bond and its Hermitian conjugate; R is sorted and contains −R
    for every R and R = 0.
    """
    if not isinstance(model, TightBinding):
        model = _as_tight_binding(model)
    dim = model.dim
    n = model.onsite.shape[0]
    hR = np.asarray(model.hop_R, dtype=np.int64)
    hi, hj = np.asarray(model.hop_i), np.asarray(model.hop_j)
    t = np.asarray(model.hopping)
    R3 = np.zeros((hR.shape[0], 3), dtype=np.int64)
    R3[:, :dim] = hR
    allR = np.unique(np.concatenate([R3, -R3, np.zeros((1, 3), np.int64)]), axis=0)
    index = {tuple(r): k for k, r in enumerate(allR.tolist())}
    fwd = np.array([index[tuple(r)] for r in R3.tolist()], dtype=np.int64)
    bwd = np.array([index[tuple(r)] for r in (-R3).tolist()], dtype=np.int64)
    ham = np.zeros((len(allR), n, n), dtype=np.complex128)
    np.add.at(ham, (fwd, hi, hj), t)
    np.add.at(ham, (bwd, hj, hi), np.conj(t))
    ham[index[(0, 0, 0)]] += np.diag(np.asarray(model.onsite, dtype=np.float64))
    return allR, ham


def _as_tight_binding(model) -> TightBinding:
    if isinstance(model, TightBinding):
        return model
    convert = getattr(model, "to_tight_binding", None)
    if convert is not None:
        return convert()
    if not getattr(model, "is_lattice", False):
        raise ValueError(
            f"{type(model).__name__} is a continuum model; only lattice models can be written "
            "as Wannier90 files."
        )
    return to_tight_binding(model)


def _lattice3(model: TightBinding, padding: float) -> np.ndarray:
    dim = model.dim
    lat = np.zeros((3, 3))
    lat[:dim, :dim] = np.asarray(model.lattice_vectors)
    for ax in range(dim, 3):
        lat[ax, ax] = padding
    return lat


# ------------------------------------------------------------------------------------------------
# public readers
# ------------------------------------------------------------------------------------------------
def read_hr(
    path,
    *,
    lattice,
    positions=None,
    spin=None,
    spin_ordering: str | None = None,
    convention: str = "positions",
    dim: int | None = None,
) -> TightBinding:
    r"""Read ``seedname_hr.dat`` into a :class:`~qgeo_jax.models.TightBinding`.

    H_mn(k) = Σ_R e^{ik·(R + τ_n − τ_m)} H_mn(R)/N_R (``convention="positions"``, package default)
    or Σ_R e^{ik·R} H_mn(R)/N_R (``"cell"``, Wannier90's own). The file holds no lattice and no
    centres: ``lattice`` (rows, length units, (3, 3) or (2, 2)) is required; ``positions`` are the
    Cartesian Wannier centres (n, 3) (e.g. :func:`read_centres_xyz`), default all at the origin —
    then both conventions coincide and geometric quantities omit the intra-cell position terms.
    ``spin_ordering`` ("interleaved" / "blocks") builds S = σ/2 for a spinor basis; ``spin`` gives
    explicit (3, n, n) operators instead. Energies keep the file's unit (eV for Wannier90).
    """
    reader = _Reader(path)
    num_wann, nrpts = _read_header_counts(reader)
    ndegen = _read_degeneracies(reader, nrpts)
    data, linenos = reader.block(nrpts * num_wann * num_wann, 7, "R1 R2 R3 m n Re Im")
    reader.expect_end()
    ints = _check_integer_columns(reader, data, linenos, [0, 1, 2, 3, 4], "R and orbital indices")
    values = data[:, 5] + 1j * data[:, 6]
    rvecs, where, ham = _assemble(
        reader, ints[:, :3], ints[:, 3], ints[:, 4], values, linenos, num_wann, nrpts
    )
    # The degeneracy list follows the file's order of R blocks (first appearance).
    order = _first_appearance_order(ints[:, :3], rvecs)
    ham = ham / ndegen[order][:, None, None]
    return tight_binding_from_real_space(
        rvecs,
        ham,
        lattice,
        positions=positions,
        spin=spin,
        spin_ordering=spin_ordering,
        convention=convention,
        dim=dim,
        name=reader.name,
        source_lines=where,
    )


def _first_appearance_order(R_rows: np.ndarray, rvecs: np.ndarray) -> np.ndarray:
    """For each unique R (sorted, as in ``rvecs``), its position in the file's block order."""
    _, first = np.unique(R_rows, axis=0, return_index=True)
    file_rank = np.argsort(np.argsort(first))
    return file_rank


def read_tb(
    path,
    *,
    spin=None,
    spin_ordering: str | None = None,
    convention: str = "positions",
    dim: int | None = None,
    return_positions: bool = False,
):
    r"""Read ``seedname_tb.dat`` (lattice, H(R) and ⟨m0|r|nR⟩) into a TightBinding.

    The Wannier centres τ_n = ⟨n0|r|n0⟩/N_0 (diagonal of the R = 0 position block) place the
    orbitals, and the model uses the "positions" convention unless ``convention="cell"``.
    ``return_positions=True`` also returns the full position matrix r_mn(R) as
    (R (nR, 3), r (nR, n, n, 3)), divided by N_R, for users who need the off-diagonal elements.
    """
    reader = _Reader(path)
    reader.next_line("the header line", skip_blank=False)
    lattice = np.array([reader.numbers(3, f"lattice vector a{i + 1} (x y z)")[1] for i in range(3)])
    if abs(np.linalg.det(lattice)) < 1e-12:
        raise ValueError(
            f"{reader.name}: the three lattice vectors are linearly dependent: {lattice.tolist()}."
        )
    ln, (num_wann,) = reader.numbers(1, "num_wann", kind=int)
    if num_wann < 1:
        raise reader.error(ln, f"num_wann must be positive, got {num_wann}.")
    ln, (nrpts,) = reader.numbers(1, "nrpts", kind=int)
    if nrpts < 1:
        raise reader.error(ln, f"nrpts must be positive, got {nrpts}.")
    ndegen = _read_degeneracies(reader, nrpts)

    def read_blocks(ncols, what):
        rs, rows, lines = [], [], []
        for _ in range(nrpts):
            ln, r = reader.numbers(3, f"lattice vector R1 R2 R3 of a {what} block", kind=int)
            data, linenos = reader.block(num_wann * num_wann, ncols, what)
            rs.append(np.broadcast_to(np.asarray(r, dtype=np.int64), (data.shape[0], 3)))
            rows.append(data)
            lines.append(linenos)
        return np.concatenate(rs), np.concatenate(rows), np.concatenate(lines)

    R_h, data_h, lines_h = read_blocks(4, "m n Re Im (Hamiltonian)")
    R_r, data_r, lines_r = read_blocks(8, "m n Re Im of x, y, z (position)")
    reader.expect_end()
    mn_h = _check_integer_columns(reader, data_h, lines_h, [0, 1], "orbital indices")
    mn_r = _check_integer_columns(reader, data_r, lines_r, [0, 1], "orbital indices")
    vals_h = data_h[:, 2] + 1j * data_h[:, 3]
    vals_r = data_r[:, 2::2] + 1j * data_r[:, 3::2]
    rvecs, where, ham = _assemble(
        reader, R_h, mn_h[:, 0], mn_h[:, 1], vals_h, lines_h, num_wann, nrpts, "H"
    )
    rvecs_r, _, pos = _assemble(
        reader, R_r, mn_r[:, 0], mn_r[:, 1], vals_r, lines_r, num_wann, nrpts, "position"
    )
    if not np.array_equal(rvecs, rvecs_r):
        raise ValueError(
            f"{reader.name}: the Hamiltonian and position blocks list different lattice vectors R."
        )
    order = _first_appearance_order(R_h, rvecs)
    order_r = _first_appearance_order(R_r, rvecs)
    ham = ham / ndegen[order][:, None, None]
    pos = pos / ndegen[order_r][:, None, None, None]
    zero = (
        int(np.flatnonzero((rvecs == 0).all(axis=1))[0]) if (rvecs == 0).all(axis=1).any() else None
    )
    if zero is None:
        raise ValueError(f"{reader.name}: no R = (0, 0, 0) block.")
    centres_c = np.diagonal(pos[zero], axis1=0, axis2=1).T  # (n, 3)
    if np.abs(centres_c.imag).max() > 1e-6 * max(1.0, np.abs(centres_c.real).max()):
        raise ValueError(
            f"{reader.name}: the Wannier centres ⟨n0|r|n0⟩ have imaginary parts; "
            "the file is inconsistent."
        )
    model = tight_binding_from_real_space(
        rvecs,
        ham,
        lattice,
        positions=centres_c.real,
        spin=spin,
        spin_ordering=spin_ordering,
        convention=convention,
        dim=dim,
        name=reader.name,
        source_lines=where,
    )
    return (model, (rvecs, pos)) if return_positions else model


def read_centres_xyz(path) -> np.ndarray:
    """Wannier centres (num_wann, 3), Cartesian Å, from ``seedname_centres.xyz`` (the ``X`` rows).

    Format: a count line, a comment line, then ``X x y z`` for each Wannier function followed by
    ``Symbol x y z`` for each atom (Wannier90 ``write_xyz = true``).
    """
    reader = _Reader(path)
    ln, (count,) = reader.numbers(1, "number of entries", kind=int)
    reader.next_line("the comment line", skip_blank=False)
    centres = []
    for _ in range(count):
        lineno, line = reader.next_line(f"{count} entries 'Symbol x y z'")
        tokens = line.split()
        if len(tokens) != 4:
            raise reader.error(lineno, f"expected 'Symbol x y z' (4 fields), got {len(tokens)}.")
        xyz = [_parse(tok, float, reader, lineno, "x y z") for tok in tokens[1:]]
        if tokens[0] == "X":
            if len(centres) != 0 and centres[-1] is None:
                raise reader.error(lineno, "Wannier centres (X) must come before the atoms.")
            centres.append(xyz)
        else:
            centres.append(None)
    reader.expect_end()
    wann = [c for c in centres if c is not None]
    if not wann:
        raise ValueError(f"{reader.name}: no Wannier centres (lines starting with 'X').")
    return np.asarray(wann, dtype=np.float64)


# ------------------------------------------------------------------------------------------------
# public writers
# ------------------------------------------------------------------------------------------------
def _fmt(x: float) -> str:
    # 17 significant digits: every float64 survives the text round trip exactly.
    return f"{x: .17e}"


def _header(model, kind: str) -> str:
    from .. import __version__

    info = f"{kind}; dim={model.dim}; convention={model.convention}"
    return f"written by qgeo_jax {__version__} ({info})"


def _degeneracy_lines(nrpts: int) -> list[str]:
    ones = [1] * nrpts
    return ["".join(f"{w:5d}" for w in ones[s : s + 15]) for s in range(0, nrpts, 15)]


def write_hr(model, path) -> None:
    """Write a TightBinding (or a model with ``to_tight_binding()``) as ``seedname_hr.dat``.

    All degeneracy weights are 1; numbers carry 17 significant digits, so :func:`read_hr` with the
    same lattice, ``positions=model.positions()`` and ``convention=model.convention`` restores H(k)
    exactly (the file format stores neither centres nor convention; the header line notes them).
    2D/1D models are embedded in 3D with R = 0 along the missing axes. Other lattice models are
    converted first (their ``to_tight_binding()`` or :func:`to_tight_binding`).
    """
    model = _as_tight_binding(model)
    rvecs, ham = real_space_hamiltonian(model)
    n = ham.shape[1]
    lines = [_header(model, "hr"), f"{n:12d}", f"{len(rvecs):12d}", *_degeneracy_lines(len(rvecs))]
    for r, h in zip(rvecs.tolist(), ham, strict=True):
        for jn in range(n):
            for im in range(n):
                z = h[im, jn]
                lines.append(
                    f"{r[0]:5d}{r[1]:5d}{r[2]:5d}{im + 1:5d}{jn + 1:5d} "
                    f"{_fmt(z.real)} {_fmt(z.imag)}"
                )
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")


def write_tb(model, path, *, padding: float = 10.0) -> None:
    """Write a TightBinding (or a model with ``to_tight_binding()``) as ``seedname_tb.dat``.

    The position blocks hold the orbital centres on the R = 0 diagonal and zeros elsewhere (the
    tight-binding position operator). 2D/1D models get extra lattice vectors of length ``padding``
    along the missing Cartesian axes. :func:`read_tb` restores the model exactly.
    """
    model = _as_tight_binding(model)
    rvecs, ham = real_space_hamiltonian(model)
    n = ham.shape[1]
    lat = _lattice3(model, padding)
    cart = np.zeros((n, 3))
    cart[:, : model.dim] = np.asarray(model.positions())
    lines = [_header(model, "tb")]
    lines += [" ".join(_fmt(x) for x in row) for row in lat]
    lines += [f"{n:12d}", f"{len(rvecs):12d}", *_degeneracy_lines(len(rvecs))]
    for r, h in zip(rvecs.tolist(), ham, strict=True):
        lines += ["", f"{r[0]:5d}{r[1]:5d}{r[2]:5d}"]
        for jn in range(n):
            for im in range(n):
                z = h[im, jn]
                lines.append(f"{im + 1:5d}{jn + 1:5d}   {_fmt(z.real)} {_fmt(z.imag)}")
    for r in rvecs.tolist():
        lines += ["", f"{r[0]:5d}{r[1]:5d}{r[2]:5d}"]
        at_zero = not any(r)
        for jn in range(n):
            for im in range(n):
                xyz = cart[im] if (at_zero and im == jn) else np.zeros(3)
                lines.append(
                    f"{im + 1:5d}{jn + 1:5d}   " + " ".join(f"{_fmt(x)} {_fmt(0.0)}" for x in xyz)
                )
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")


def write_centres_xyz(
    positions: Sequence, path, *, comment: str = "Wannier centres, written by qgeo_jax"
) -> None:
    """Write Cartesian centres (n, 3) as an xyz file readable by :func:`read_centres_xyz`."""
    pos = np.asarray(positions, dtype=np.float64)
    if pos.ndim != 2 or pos.shape[1] not in (1, 2, 3):
        raise ValueError(f"positions must be (n, 3) Cartesian, got shape {pos.shape}.")
    full = np.zeros((pos.shape[0], 3))
    full[:, : pos.shape[1]] = pos
    lines = [f"{len(full):6d}", comment] + [f"X {_fmt(x)} {_fmt(y)} {_fmt(z)}" for x, y, z in full]
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")


# ------------------------------------------------------------------------------------------------
# any lattice model → hopping table
# ------------------------------------------------------------------------------------------------
def to_tight_binding(
    model, *, max_range: int = 3, spin=None, tol: float = 1e-10, check: bool = True
) -> TightBinding:
    r"""Hopping table of any lattice model whose hoppings reach at most ``max_range`` cells.

    H(R) = (1/N) Σ_k e^{−ik·R} D(k) H(k) D(k)†, D = diag(e^{ik·τ}), on an N = (2·max_range+1)^dim
    grid of the reciprocal cell: the conjugation by D undoes the "positions" phases
    e^{ik·(τ_j−τ_i)}, so the transform is exact when |R_a| ≤ max_range. ``check`` compares H(k)
    of the result with the model at random k (relative ``tol``) and raises if hoppings reach
    further. Spin operators are taken from ``spin`` or the model.
    """
    if not model.is_lattice:
        raise ValueError(f"{type(model).__name__} is a continuum model; it has no hopping table.")
    dim = model.dim
    n_side = 2 * int(max_range) + 1
    grid = (
        np.stack(np.meshgrid(*[np.arange(n_side)] * dim, indexing="ij"), -1).reshape(-1, dim)
        / n_side
    )
    recip = np.asarray(model.reciprocal())
    kc = grid @ recip
    tau = np.asarray(model.positions())
    hk = np.asarray(_batched_hamiltonian(model, jnp.asarray(kc)))
    d = np.exp(1j * (kc @ tau.T))  # (nk, n)
    hcell = d[:, :, None] * hk * np.conj(d)[:, None, :]
    rr = np.stack(
        np.meshgrid(*[np.arange(-max_range, max_range + 1)] * dim, indexing="ij"), -1
    ).reshape(-1, dim)
    phase = np.exp(-2j * np.pi * (rr @ grid.T)) / grid.shape[0]  # (nR, nk)
    hR = np.einsum("rk,kij->rij", phase, hcell)
    scale = max(np.abs(hR).max(), 1e-300)
    hR[np.abs(hR) < 1e-14 * scale] = 0.0
    keep = np.abs(hR).reshape(len(rr), -1).max(axis=1) > 0
    keep[np.flatnonzero((rr == 0).all(axis=1))[0]] = True
    r3 = np.zeros((int(keep.sum()), 3), dtype=np.int64)
    r3[:, :dim] = rr[keep]
    lat3 = np.eye(3)
    lat3[:dim, :dim] = np.asarray(model.lattice)
    pos3 = np.zeros((tau.shape[0], 3))
    pos3[:, :dim] = tau
    spin = model.spin_operators() if spin is None else spin
    tb = tight_binding_from_real_space(
        r3,
        hR[keep],
        lat3,
        positions=pos3,
        spin=None if spin is None else np.asarray(spin),
        dim=dim,
        name=type(model).__name__,
        hermitian_rtol=1e-9,
    )
    if check:
        ks = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, size=(4, dim)) @ recip)
        h_ref, h_tb = (
            np.asarray(_batched_hamiltonian(model, ks)),
            np.asarray(_batched_hamiltonian(tb, ks)),
        )
        err = np.abs(h_ref - h_tb).max()
        if err > tol * max(1.0, np.abs(h_ref).max()):
            raise ValueError(
                f"to_tight_binding: {type(model).__name__} has hoppings beyond "
                f"max_range={max_range} "
                f"(|ΔH| = {err:.3g}); increase max_range."
            )
    return tb


@eqx.filter_jit
def _batched_hamiltonian(model, ks):
    return jax.vmap(model.hamiltonian)(ks)
