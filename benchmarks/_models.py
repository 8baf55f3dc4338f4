"""Benchmark models shared by the scripts in this folder."""

from __future__ import annotations

import itertools

import numpy as np

import qgeo_jax as qg


def random_tight_binding(
    norb: int,
    *,
    dim: int = 2,
    seed: int = 0,
    spin: bool = False,
    on_site_spin: bool = False,
    split: float = 0.0,
):
    """A dense-ish random tight-binding model: every orbital pair hops to all nearest cells.

    Complex hoppings break time reversal (non-zero Berry curvature and M^O); orbitals sit at random
    positions inside the cell. Deterministic for a given seed. ``on_site_spin``: the spinor partners
    (2a, 2a + 1) share one random site (as in a spinor Wannier basis) instead of two. ``split``
    lowers the first half of the orbitals by ``split`` and raises the second half (a gap opens
    between the lower and upper half of the bands once it exceeds the bandwidth).
    """
    rng = np.random.default_rng(seed)
    lattice = np.eye(dim)
    positions = rng.uniform(0, 1, size=(norb, dim))
    if spin and on_site_spin:  # spinor partners share a site, as in spinor Wannier bases
        positions = np.repeat(positions[: norb // 2], 2, axis=0)
    onsite = rng.normal(size=norb) + split * np.where(np.arange(norb) < norb // 2, -1.0, 1.0)
    hops = []
    unit = [tuple(int(i == a) for i in range(dim)) for a in range(dim)]
    for R in [(0,) * dim] + unit:
        for i, j in itertools.product(range(norb), repeat=2):
            if R == (0,) * dim and j <= i:
                continue
            t = (rng.normal() + 1j * rng.normal()) * 0.5 / np.sqrt(norb)
            hops.append((t, i, j, R))
    spin_ops = None
    if spin:
        if norb % 2:
            raise ValueError("a spinful random model needs an even number of orbitals")
        pauli = qg.models.PAULI / 2
        spin_ops = np.stack([np.kron(np.eye(norb // 2), s) for s in pauli])
    return qg.models.TightBinding(lattice, positions, onsite, hops, spin=spin_ops)
