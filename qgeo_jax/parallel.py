r"""Several processes, one reduction: ``jax.distributed`` on one machine or on a cluster.

A Brillouin-zone reduction Σ_k w(k) F(k) splits into independent partial sums over blocks of
k-points. :func:`qgeo_jax._bz.integrate` deals the chunks of a mesh out to the devices of
:func:`qgeo_jax._bz.default_devices` with ``shard_map`` and adds the per-device partial sums at the
end. Under ``jax.distributed`` those devices belong to several *processes* (one per host, GPU or
CPU core), the partial sums are added by one all-reduce (NCCL on GPUs, Gloo over TCP on CPUs), and
every process ends up holding the same, replicated result: no user code changes.

One machine: :func:`use_cpu_cores` splits this process's CPU into one JAX device per core (the
``qgeo`` command does it by default): 1.91–2.00× the speed of one pinned core on 2 cores. That
needs the per-matrix LAPACK loop of :func:`qgeo_jax._linalg.eigh` (jaxlib's batched eigh
kernel deadlocked two host devices with jax 0.10.2). Processes (below) are the route across
hosts, and a second route on one machine that shares no XLA runtime at all.

Three ways in for processes:

* :func:`run_parallel` — ``run_parallel(fn, *args, workers=2)`` runs ``fn`` in ``workers`` fresh
  processes on this machine joined by ``jax.distributed`` and returns process 0's result.
* :func:`launch` / ``python -m qgeo_jax.parallel -n 2 script.py ...`` — starts ``script.py`` in
  ``n`` processes (like ``torchrun``); the script calls :func:`initialize` first.
* On a cluster: one process per host (or per GPU), each calling :func:`initialize` (which is
  ``jax.distributed.initialize``: SLURM and Open MPI are detected by JAX itself; otherwise pass
  ``coordinator_address="host0:port", num_processes=P, process_id=i``).

Results agree with one process to round-off: the chunks are split into contiguous, equal runs, one
per process, each summed in order, and the P partial sums are added in a fixed order.
"""

from __future__ import annotations

import os
import sys

if (
    __name__ == "__main__"
    and sys.path
    and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__))
):
    # Run as a script (a worker): this package's folder must not shadow top-level modules (io, ...).
    sys.path.pop(0)

import contextlib  # noqa: E402
import pickle  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402

_ENV_COORDINATOR = "QGEO_COORDINATOR"
_ENV_NUM_PROCESSES = "QGEO_NUM_PROCESSES"
_ENV_PROCESS_ID = "QGEO_PROCESS_ID"
_ENV_PIN = "QGEO_PIN_CORE"

_initialized = False


def _strip_host_devices(flags: str) -> str:
    # One CPU device per worker: the processes, not host devices, split the mesh between them.
    return " ".join(
        f for f in flags.split() if not f.startswith("--xla_force_host_platform_device_count")
    )


def use_cpu_cores(n: int | None = None) -> int:
    """Split this process's CPU into ``n`` JAX devices (default: the cores it may run on).

    Every reduction of the package is then dealt out over them (:func:`qgeo_jax.default_devices`),
    one contiguous run of k-chunks per device, partial sums added at the end — the same result to
    round-off. Must run before JAX starts its backend (before the first array is made); raises
    otherwise. Returns the number of CPU devices. On 2 cores: 1.93–2.03× the speed of one pinned
    core (benchmarks/bench_cores.py). For several hosts use :func:`initialize` instead.
    """
    if hasattr(os, "sched_getaffinity"):
        cores = len(os.sched_getaffinity(0))
    else:
        cores = os.cpu_count() or 1
    n = cores if n is None else int(n)
    if n < 1:
        raise ValueError(f"use_cpu_cores needs n >= 1, got {n}.")
    import jax
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        if jax.config.jax_num_cpu_devices == n or (n == 1 and len(jax.devices("cpu")) == 1):
            return n
        raise RuntimeError(
            "use_cpu_cores must run before JAX starts (before any array is created); call it "
            "right after `import qgeo_jax`, or set "
            "XLA_FLAGS=--xla_force_host_platform_device_count=N."
        )
    jax.config.update("jax_num_cpu_devices", n)
    return n


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    **kwargs,
) -> None:
    """Join this process to a multi-process JAX run (``jax.distributed.initialize``).

    Call it first, before any JAX computation. Arguments left ``None`` come from the variables
    set by :func:`launch` / :func:`run_parallel` (``QGEO_COORDINATOR``, ``QGEO_NUM_PROCESSES``,
    ``QGEO_PROCESS_ID``), else from JAX's own cluster detection (SLURM, Open MPI, TPU pods, or
    ``JAX_COORDINATOR_ADDRESS``/``JAX_NUM_PROCESSES``/``JAX_PROCESS_ID``). On CPUs the
    cross-process sums use Gloo over TCP (``jax_cpu_collectives_implementation="gloo"``).
    Calling it again is a no-op.

    After it, every reduction of the package (``integrate``) spans the devices of all processes
    (:func:`qgeo_jax._bz.default_devices`), and every process gets the whole result. Write
    files from process 0 only (:func:`is_main_process`).
    """
    global _initialized
    if _initialized:
        return
    import jax

    env = os.environ
    if coordinator_address is None and _ENV_COORDINATOR in env:
        coordinator_address = env[_ENV_COORDINATOR]
        num_processes = int(env[_ENV_NUM_PROCESSES]) if num_processes is None else num_processes
        process_id = int(env[_ENV_PROCESS_ID]) if process_id is None else process_id
    with contextlib.suppress(AttributeError, KeyError, ValueError):  # older jax: no such option
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
        **kwargs,
    )
    _initialized = True


def is_main_process() -> bool:
    """True in process 0 (the one that should print and write files), and in a single process."""
    import jax

    return jax.process_index() == 0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cores() -> list[int]:
    return (
        sorted(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else list(range(os.cpu_count() or 1))
    )


def _worker_env(i: int, workers: int, port: int, pin: bool) -> dict:
    env = dict(os.environ)
    env[_ENV_COORDINATOR] = f"127.0.0.1:{port}"
    env[_ENV_NUM_PROCESSES] = str(workers)
    env[_ENV_PROCESS_ID] = str(i)
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    env["XLA_FLAGS"] = _strip_host_devices(env.get("XLA_FLAGS", ""))
    if pin:
        cores = _cores()
        env[_ENV_PIN] = str(cores[i % len(cores)])
    return env


def _stop(procs) -> None:
    # SIGKILL: JAX catches SIGTERM (its preemption notifier), and a worker left waiting in a
    # collective for a dead peer has nothing to save.
    for p in procs:
        if p.poll() is None:
            p.kill()
    for p in procs:
        p.wait()


def _wait_all(procs, timeout: float | None) -> int:
    """Wait for every process: 0, or the exit code of the first to fail (which stops the others)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        codes = [p.poll() for p in procs]
        failed = [c for c in codes if c not in (None, 0)]
        if failed:
            # A dead peer leaves the others waiting in a collective: stop them now.
            _stop(procs)
            return failed[0]
        if all(c == 0 for c in codes):
            return 0
        if deadline is not None and time.monotonic() > deadline:
            _stop(procs)
            raise TimeoutError(
                f"parallel run did not finish in {timeout} s; all {len(procs)} workers stopped."
            )
        time.sleep(0.02)


def launch(
    argv,
    workers: int = 2,
    *,
    timeout: float | None = None,
    pin: bool = False,
    env: dict | None = None,
    **popen_kwargs,
) -> int:
    """Run ``[sys.executable, *argv]`` in ``workers`` processes joined by ``jax.distributed``.

    Each process gets ``QGEO_COORDINATOR`` (127.0.0.1 and a free port), ``QGEO_NUM_PROCESSES`` and
    ``QGEO_PROCESS_ID``; the script must call :func:`initialize` before any JAX computation.
    ``pin=True`` binds process i to the i-th core this process may use. Returns 0 if every
    process succeeded, else the first non-zero exit code; if one fails the others are stopped.
    ``env`` adds variables to the workers' environment.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}.")
    port = _free_port()
    procs = []
    try:
        for i in range(workers):
            worker_env = {**_worker_env(i, workers, port, pin), **(env or {})}
            cmd = [sys.executable, *argv]
            if pin:
                # By file path, not -m: importing the package first would start JAX's backend.
                cmd = [sys.executable, os.path.abspath(__file__), "--_pinned", *argv]
            procs.append(subprocess.Popen(cmd, env=worker_env, **popen_kwargs))
        return _wait_all(procs, timeout)
    finally:
        _stop(procs)


def _to_numpy(tree):
    import jax
    import numpy as np

    return jax.tree_util.tree_map(np.asarray, tree)


def _child_main(payload_path: str, result_path: str) -> None:
    """Body of one :func:`run_parallel` worker (``python -m qgeo_jax.parallel --_child ...``)."""
    initialize()
    import jax

    try:
        with open(payload_path, "rb") as f:
            fn, args, kwargs = pickle.load(
                f
            )  # written by run_parallel in the parent, never foreign
        out = _to_numpy(jax.block_until_ready(fn(*args, **kwargs)))
        record = ("ok", out)
    except BaseException:  # report, then fail: the parent stops the peers
        record = ("error", traceback.format_exc())
    if jax.process_index() == 0 or record[0] == "error":
        tmp = f"{result_path}.{jax.process_index()}.tmp"
        with open(tmp, "wb") as f:
            pickle.dump(record, f)
        os.replace(tmp, f"{result_path}.{jax.process_index()}")
    if record[0] == "error":
        sys.stderr.write(record[1])
        sys.stderr.flush()
        os._exit(1)
    jax.distributed.shutdown()


def run_parallel(
    fn, *args, workers: int = 2, timeout: float | None = None, pin: bool = False, **kwargs
):
    """``fn(*args, **kwargs)`` computed by ``workers`` processes together; process 0's result.

    The workers are fresh Python processes on this machine, each with one CPU device (or its own
    GPU), joined by ``jax.distributed`` on 127.0.0.1; every reduction inside ``fn`` is split
    between them (see the module docstring), so ``fn`` is written as for one process. ``fn`` and
    the arguments are pickled: ``fn`` must be importable (a module-level function; in a script,
    keep the work under ``if __name__ == "__main__":``). Arrays in the result come back as numpy
    arrays. ``timeout`` (s) bounds the whole run; ``pin=True`` binds worker i to core i.

    Cost: start-up. Each call starts fresh workers that import JAX, join and compile ``fn``:
    a trivial ``fn`` took 10.5 s on 2 workers against 3.5 s for one plain Python + JAX start, on
    the shared 2-core test machine (load ≈ 11). It pays off for work of more than ~10 s on one
    core; for many calls, start the processes once (:func:`launch`) and loop inside them.
    """
    import tempfile

    with tempfile.TemporaryDirectory(prefix="qgeo_parallel_") as tmp:
        payload = os.path.join(tmp, "payload.pkl")
        result = os.path.join(tmp, "result")
        with open(payload, "wb") as f:
            pickle.dump((fn, args, kwargs), f)
        # The parent's sys.path, so that fn's module imports in the worker as it did here.
        path = os.pathsep.join(
            [p for p in sys.path if p] + [os.environ.get("PYTHONPATH", "")]
        ).strip(os.pathsep)
        # The worker runs this file as a script: ``-m qgeo_jax.parallel`` would import the
        # package (and JAX arrays) before jax.distributed.initialize, which must come first.
        code = launch(
            [os.path.abspath(__file__), "--_child", payload, result],
            workers,
            timeout=timeout,
            pin=pin,
            env={"PYTHONPATH": path},
        )
        errors = sorted(
            f for f in os.listdir(tmp) if f.startswith("result.") and not f.endswith(".tmp")
        )
        records = {}
        for name in errors:
            with open(os.path.join(tmp, name), "rb") as f:
                records[int(name.split(".")[1])] = pickle.load(f)
        failed = [r[1] for r in records.values() if r[0] == "error"]
        if failed:
            raise RuntimeError(f"a parallel worker failed:\n{failed[0]}")
        if code != 0 or 0 not in records:
            raise RuntimeError(f"parallel workers exited with code {code} and no result.")
        return records[0][1]


def main(argv=None) -> int:
    """``python -m qgeo_jax.parallel [-n WORKERS] [--pin] [--timeout S] script.py [args...]``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--_child"]:
        _child_main(argv[1], argv[2])
        return 0
    if argv[:1] == ["--_pinned"]:
        # Pin, then become the target program (same process, so the affinity is inherited).
        os.sched_setaffinity(0, {int(os.environ[_ENV_PIN])})
        os.execv(sys.executable, [sys.executable, *argv[1:]])
    import argparse

    parser = argparse.ArgumentParser(prog="python -m qgeo_jax.parallel", description=main.__doc__)
    parser.add_argument("-n", "--workers", type=int, default=2)
    parser.add_argument("--pin", action="store_true", help="bind worker i to core i")
    parser.add_argument("--timeout", type=float, default=None)
    parser.add_argument("program", nargs=argparse.REMAINDER)
    ns = parser.parse_args(argv)
    if not ns.program:
        parser.error("give the script to run, e.g. python -m qgeo_jax.parallel -n 2 run.py")
    return launch(ns.program, ns.workers, timeout=ns.timeout, pin=ns.pin)


if __name__ == "__main__":
    sys.exit(main())
