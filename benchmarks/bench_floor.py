"""The floor table of issue 8: the full response set against bare batched eigh, in one run.

For each model: (a) the floor — build H(k) and run eigh on every k of the mesh (same mesh, same
chunks); (b) the full set fused in one pass (:func:`qgeo_jax._pipeline.responses`: M^O, M^S, AHC and
the four kinetic responses, 101 chemical potentials) with ``mu_method="exact"`` and
``"interpolated"``; (c) the same seven quantities as seven separate public calls. Prints k-points
per CPU-second, the CPU-time and wall-time ratios to the floor (measured in the same process,
minimum over repeats), and the ratio fused / separate; ``--json`` writes the records.

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_floor.py [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import qgeo_jax as qg  # noqa: E402
from qgeo_jax._kinetic import kinetic_magnetization  # noqa: E402
from qgeo_jax._pipeline import _hopping_groups, responses  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from _models import random_tight_binding  # noqa: E402

TEMPERATURE = 0.05
TAU = 1.0


def best_times(fn, repeat):
    """(min CPU seconds, min wall seconds) over ``repeat`` steady-state runs (after one warm-up)."""
    jax.block_until_ready(fn())
    cpu, wall = [], []
    for _ in range(repeat):
        c0, w0 = time.process_time(), time.perf_counter()
        jax.block_until_ready(fn())
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    return min(cpu), min(wall)


@eqx.filter_jit
def eigh_floor(model, mesh, chunk_size):
    def per_k(k):
        w, v = jnp.linalg.eigh(model.hamiltonian(k))
        return jnp.sum(w) + jnp.real(v[0, 0])

    return qg.integrate(per_k, mesh, chunk_size=chunk_size)


@eqx.filter_jit
def eigh_only_floor(model, mesh, chunk_size, groups):
    """The floor with H(k) from the pipeline's grouped-hopping route (TightBinding): ~eigh alone."""
    from qgeo_jax._pipeline import _hamiltonian_and_gradient, _hopping_matrices

    t_r = _hopping_matrices(model, groups)

    def per_k(k):
        w, v = jnp.linalg.eigh(_hamiltonian_and_gradient(model, k, groups, t_r)[0])
        return jnp.sum(w) + jnp.real(v[0, 0])

    return qg.integrate(per_k, mesh, chunk_size=chunk_size)


def separate(model, mesh, mus, chunk, spin):
    """The same quantities through the public functions, one pass each."""
    kw = dict(mu=mus, temperature=TEMPERATURE, chunk_size=chunk)
    out = [
        qg.orbital_magnetization(model, mesh, **kw),
        qg.anomalous_hall_conductivity(model, mesh, **kw),
    ]
    parts = ("spin", "orbital") if spin else ("orbital",)
    if spin:
        out.append(qg.spin_magnetization(model, mesh, **kw))
    for part in parts:
        out.append(
            kinetic_magnetization(model, mesh, part=part, mechanism="extrinsic", tau=TAU, **kw)
        )
        out.append(kinetic_magnetization(model, mesh, part=part, mechanism="intrinsic", **kw))
    return out


def run_case(name, model, shape, mus, chunk, repeat, with_separate):
    mesh = qg.monkhorst_pack(model, shape)
    nk = mesh.size
    spin = model.spin_operators() is not None
    fused = {
        m: (
            lambda m=m: responses(
                model, mesh, mu=mus, temperature=TEMPERATURE, tau=TAU, chunk_size=chunk, mu_method=m
            )
        )
        for m in ("exact", "interpolated")
    }
    # "floor": H(k) by model.hamiltonian + eigh (as in bench_equilibrium.py); for TightBinding
    # models also "eigh only", with H(k) by the cheap grouped-hopping route of the pipeline.
    rec = {
        "model": name,
        "norb": model.norb,
        "dim": model.dim,
        "nk": nk,
        "n_mu": int(mus.size),
        "chunk": chunk,
    }
    t0 = time.perf_counter()
    jax.block_until_ready(fused["exact"]())
    rec["compile_plus_first_s_exact"] = time.perf_counter() - t0
    fc, fw = best_times(lambda: eigh_floor(model, mesh, chunk), repeat)
    rec["floor_k_per_cpu_s"] = nk / fc
    line = f"{name:>13s} N={model.norb:<3d} nk={nk:<7d} floor {nk / fc:9.3e} k/CPU-s"
    groups = _hopping_groups(model)
    if groups is not None:
        ec, _ = best_times(lambda: eigh_only_floor(model, mesh, chunk, groups), repeat)
        rec["eigh_only_floor_k_per_cpu_s"] = nk / ec
        line += f" (eigh only: {ec / fc:4.2f} of it)"
    for m, fn in fused.items():
        c, w = best_times(fn, repeat)
        rec[f"{m}_k_per_cpu_s"] = nk / c
        rec[f"{m}_ratio_cpu"], rec[f"{m}_ratio_wall"] = c / fc, w / fw
        line += f" | {m[:6]} {c / fc:5.2f} (wall {w / fw:5.2f})"
    if with_separate:
        c, w = best_times(lambda: separate(model, mesh, mus, chunk, spin), max(1, repeat // 2))
        rec["separate_ratio_cpu"], rec["separate_ratio_wall"] = c / fc, w / fw
        rec["fused_exact_over_separate_cpu"] = rec["exact_ratio_cpu"] / rec["separate_ratio_cpu"]
        line += f" | separate {c / fc:5.2f} (fused/sep {rec['fused_exact_over_separate_cpu']:4.2f})"
    print(line, flush=True)
    return rec


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small meshes, N up to 32 (smoke run)")
    p.add_argument("--json", default=None, help="write the records to this JSON file")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--chunk", type=int, default=256)
    p.add_argument("--no-separate", action="store_true", help="skip the seven separate calls")
    p.add_argument(
        "--norbs",
        type=int,
        nargs="*",
        default=None,
        help="random-model sizes (default 4 8 16 32 64)",
    )
    p.add_argument(
        "--split-spinors",
        action="store_true",
        help="put the two spinor partners of the random models on different sites (the spin "
        "operators then do not commute with the positions and the pipeline keeps the e^{ik·τ} "
        "phase; the default puts them on one site, as in a spinor Wannier basis)",
    )
    args = p.parse_args(argv)
    mus = jnp.linspace(-1.0, 1.0, 101)
    # k-points per case: about the same floor time (~0.25 s, --quick ~0.06 s) for every N, taking
    # the floor as ~2e6 (2/N)^2 k-points per second.
    seconds = 0.06 if args.quick else 0.25
    norbs = (
        args.norbs
        if args.norbs is not None
        else ([4, 8, 16, 32] if args.quick else [4, 8, 16, 32, 64])
    )
    side = lambda n: max(8, int(np.sqrt(seconds * 2e6 * (2 / n) ** 2)))
    cases = [
        (
            "RashbaLattice",
            qg.models.RashbaLattice(alpha=0.6, exchange=(0.1, 0.0, 0.3)),
            (side(2),) * 2,
        ),
        ("Haldane", qg.models.Haldane(t2=0.15, phi=np.pi / 2, delta=0.2), (side(2),) * 2),
    ] + [
        (
            f"random-TB-{n}",
            random_tight_binding(n, dim=2, seed=n, spin=True, on_site_spin=not args.split_spinors),
            (side(n),) * 2,
        )
        for n in norbs
    ]
    records = [
        run_case(name, m, shape, mus, args.chunk, args.repeat, not args.no_separate)
        for name, m, shape in cases
    ]
    meta = {
        "jax": jax.__version__,
        "python": platform.python_version(),
        "devices": str(jax.devices()),
        "cpu_count": os.cpu_count(),
        "temperature": TEMPERATURE,
        "n_mu": int(mus.size),
    }
    print(f"devices: {jax.devices()}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"meta": meta, "records": records}, fh, indent=2)
    return records


if __name__ == "__main__":
    main()
