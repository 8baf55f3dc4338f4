r"""The ``qgeo`` command: run a model on a k-mesh, print a table, write results with provenance.

``qgeo`` with no arguments is the package's main job on a built-in default: Haldane's model in its
Chern phase (C = −1) on a 60 × 60 Monkhorst–Pack mesh, seven chemical potentials in and out of the
gap, T = 0.005. It prints the model, both Chern-number routes (Kubo and Fukui–Hatsugai plaquettes),
the orbital magnetization M^O (seed eq. 5) and the anomalous Hall conductivity for each μ, a Středa
check dM^O/dμ = C e/h in the gap, and compile/steady-state timings. ``qgeo run config.toml`` does
the same for any built-in model, mesh, μ list and set of quantities and writes ``.npz`` + ``.json``
and PNG plots (every μ-dependent quantity against μ; the bands along the high-symmetry path coloured
by Berry curvature), drawn with matplotlib's Agg backend (no display; ``--no-plots`` or
``[output] plots = false`` to skip; without matplotlib one warning line and the data only).

``precision = "float32"`` runs H(k), eigh and the geometry in single precision through
:func:`qgeo_jax._precision.cast_precision` (the k-sum stays float64); ``device = "cpu" | "gpu" |
"auto"`` picks the JAX backend. Both are recorded in the provenance, with the list of written files.
A progress bar (quantity, steps done/total, elapsed, ETA) goes to stderr when it is a terminal
(``--progress`` forces it, ``--quiet`` suppresses it); redirected logs never get it unless forced.

The pieces are tables a later issue extends without touching the rest:

* ``_model_table()`` — config name → model class (parameters read from the constructor signature);
* ``_SCHEMA`` — allowed config keys (unknown keys fail with a difflib "did you mean");
* ``_QUANTITIES`` — quantity name → ``Quantity(compute, help, check)``: ``compute(ctx)`` calls the
  library and returns ``[Output, ...]`` (arrays with units and the table columns to print),
  ``check`` rejects an unsuitable model or option before any work is done;
* ``_write_outputs`` / ``_print_report`` — I/O only, no physics.

Long runs are cut into blocks (the Chern number; chunks of ``options.block_size`` chemical
potentials). With an output directory every finished block is written atomically to
``OUT/PREFIX.partial/`` before the next starts (:mod:`qgeo_jax._resume`); after SIGINT, SIGTERM or a
crash, ``--resume`` loads them and computes only the rest, with results identical to an
uninterrupted run. A partial directory of a different configuration is reported, never merged.

Exit codes: 0 success, 2 usage or configuration error (one line, no traceback), 1 a failure while
computing (one line; set ``QGEO_DEBUG=1`` for the traceback), 130 / 143 interrupted by SIGINT /
SIGTERM (finished blocks are kept; rerun with ``--resume``).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import difflib
import inspect
import io
import json
import os
import platform
import re
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

PROG = "qgeo"

# --- errors -------------------------------------------------------------------------------------


class UsageError(Exception):
    """A problem with the command line or the config file: reported in one line, exit code 2."""


def _did_you_mean(word: str, choices: Sequence[str], prefix: str = "") -> str:
    """' (did you mean 'x'?)' from difflib, or the list of allowed names when nothing is close."""
    lower = {c.lower(): c for c in choices}  # case-insensitive: 'ev' suggests 'eV'
    match = difflib.get_close_matches(word.lower(), list(lower), n=1, cutoff=0.6)
    if match:
        return f" (did you mean {prefix + lower[match[0]]!r}?)"
    return f" (allowed: {', '.join(prefix + c for c in sorted(choices))})"


# --- models -------------------------------------------------------------------------------------


_CORE_MODELS = ("Haldane", "QiWuZhang", "MassiveDirac", "Rashba", "RashbaLattice", "TightBinding")
_MODEL_ALIASES = {"qwz": "QiWuZhang", "dirac": "MassiveDirac", "tb": "TightBinding"}


def _model_table() -> dict[str, Callable]:
    """Every built-in model of :mod:`qgeo_jax.models`: concrete model classes and the factories
    that return one (e.g. ``tmd_three_band``), found by introspection so new models appear here
    without editing the CLI. The textbook models come first."""
    from . import models

    found = {}
    for name in dir(models):
        obj = getattr(models, name)
        if name.startswith("_") or name == "from_function":
            continue
        if inspect.isclass(obj):
            concrete = issubclass(obj, models.AbstractModel) and not inspect.isabstract(obj)
            if concrete and obj is not models.FunctionModel:
                found[name] = obj
        elif inspect.isfunction(obj):
            ret = inspect.signature(obj).return_annotation  # a string under `from __future__`
            ret = getattr(models, ret, None) if isinstance(ret, str) else ret
            if inspect.isclass(ret) and issubclass(ret, models.AbstractModel):
                found[name] = obj
    # A class whose factory has the same normalised name is reached through the factory only.
    factories = {_norm(n) for n, obj in found.items() if inspect.isfunction(obj)}
    found = {
        n: obj for n, obj in found.items() if inspect.isfunction(obj) or _norm(n) not in factories
    }
    core = [n for n in _CORE_MODELS if n in found]
    return {n: found[n] for n in core + sorted(set(found) - set(core), key=str.lower)}


def _norm(name: str) -> str:
    return name.lower().replace("_", "").replace("-", "")


def _resolve_model(name: str) -> tuple[str, Callable]:
    table = _model_table()
    lookup = {_norm(k): k for k in table} | {_norm(k): v for k, v in _MODEL_ALIASES.items()}
    key = lookup.get(_norm(str(name)))
    if key is None or key not in table:
        raise UsageError(f"unknown model {name!r}{_did_you_mean(str(name), list(table))}")
    return key, table[key]


def _model_parameters(maker: Callable) -> tuple[dict[str, Any], bool]:
    """Named parameters of a model class's constructor or a factory, with defaults
    (``inspect.Parameter.empty`` if required), and whether it also takes ``**kwargs``."""
    params = list(
        inspect.signature(maker.__init__ if inspect.isclass(maker) else maker).parameters.values()
    )
    if inspect.isclass(maker):
        params = params[1:]  # self
    named = {p.name: p.default for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    return named, any(p.kind == p.VAR_KEYWORD for p in params)


def _prepare_params(cls: type, params: dict[str, Any]) -> dict[str, Any]:
    """TOML values → constructor arguments (lists → tuples; TightBinding's complex hoppings)."""
    out = {}
    for key, value in params.items():
        if key == "hoppings":
            value = [_hopping(h, i) for i, h in enumerate(value)]
        elif isinstance(value, list):
            value = np.asarray(value, dtype=np.float64)
        out[key] = value
    return out


def _hopping(h, idx):
    if not isinstance(h, list | tuple) or len(h) != 4:
        raise UsageError(
            f"model.hoppings[{idx}] = {h!r}; expected [t, i, j, R] (t a number or [re, im])."
        )
    t, i, j, r = h
    if isinstance(t, list | tuple):
        if len(t) != 2:
            raise UsageError(f"model.hoppings[{idx}]: a complex t is written [re, im], got {t!r}.")
        t = complex(t[0], t[1])
    return (t, int(i), int(j), tuple(int(x) for x in np.atleast_1d(r)))


def build_model(name: str, params: dict[str, Any]):
    """Instantiate a built-in model from its config name and parameters (unknown ones rejected)."""
    canonical, cls = _resolve_model(name)
    allowed, open_ended = _model_parameters(cls)
    for key in params:
        if key not in allowed and not open_ended:  # open-ended makers validate their own keys
            raise UsageError(
                f"unknown parameter model.{key} for {canonical}"
                + _did_you_mean(key, list(allowed), "model.")
            )
    missing = [k for k, v in allowed.items() if v is inspect.Parameter.empty and k not in params]
    if missing:
        raise UsageError(
            f"{canonical} needs parameter(s) {', '.join('model.' + m for m in missing)}"
        )
    try:
        return canonical, cls(**_prepare_params(cls, params))
    except (ValueError, TypeError) as err:
        raise UsageError(f"{canonical}: {_first_line(err)}") from None


# --- configuration ------------------------------------------------------------------------------

# Allowed keys; ``None`` marks a leaf. The model table's keys are checked against the chosen
# model's constructor instead (see ``build_model``).
_SCHEMA: dict[str, Any] = {
    "description": None,
    "quantities": None,
    "precision": None,
    "device": None,
    "temperature": None,
    "mu": None,
    "model": "model parameters",
    "mesh": {"shape": None, "shift": None, "k_max": None, "kind": None},
    "output": {"dir": None, "prefix": None, "plots": None},
    "units": {"energy": None, "length": None},
    "options": {
        "chunk_size": None,
        "g_factor": None,
        "tau": None,
        "degen_tol": None,
        "chern_bands": None,
        "timing_repeats": None,
        "block_size": None,
    },
}

DEFAULT_QUANTITIES = ("chern", "orbital_magnetization", "ahc")
DEFAULT_MU = (-1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0)
DEFAULT_TEMPERATURE = 0.005
DEFAULT_BLOCK_SIZE = 16  # chemical potentials per block (one progress line and one file each)
PRECISIONS = ("float64", "float32")
DEVICES = ("auto", "cpu", "gpu")
FLOAT32_WARNING = (
    "float32: H(k), its eigensystem and the geometry are computed in single precision "
    "(μ-weights and the k-sum stay float64); expect relative errors ~1e-5-1e-4 on gapped "
    "models and more near band degeneracies; the Chern quantization check is less strict"
)


@dataclasses.dataclass
class Job:
    """Everything one run needs, after validation (the config file, flags and defaults merged)."""

    model_name: str = "Haldane"
    model_params: dict[str, Any] = dataclasses.field(default_factory=dict)
    mesh: dict[str, Any] = dataclasses.field(default_factory=dict)  # defaults per model kind
    mu: np.ndarray = dataclasses.field(default_factory=lambda: np.array(DEFAULT_MU))
    temperature: float = DEFAULT_TEMPERATURE
    temperature_input: Any = DEFAULT_TEMPERATURE
    quantities: tuple[str, ...] = DEFAULT_QUANTITIES
    quantities_given: bool = False  # False: the defaults, trimmed to what the model supports
    out_dir: str | None = None
    prefix: str = "qgeo_results"
    energy_unit: str = "eV"
    length_unit: str = "angstrom"
    chunk_size: int = 256
    g_factor: float = 2.0
    tau: float | None = None
    degen_tol: float = 1e-8
    chern_bands: tuple[int, ...] | None = None
    timing_repeats: int = 3
    block_size: int = DEFAULT_BLOCK_SIZE
    resume: bool = False
    plots: bool = True  # PNG figures next to the .npz/.json (needs matplotlib)
    precision: str = "float64"  # "float32": single-precision per-k linear algebra
    device: str = "auto"  # "cpu", "gpu" or "auto" (JAX's default backend)
    progress: str = "auto"  # "auto": a bar on stderr only if it is a terminal; "on"; "off"
    description: str = ""
    source: str = "built-in default job"
    config: dict[str, Any] | None = None  # the raw config, kept for provenance


def _check_keys(table: dict, schema: dict, where: str) -> None:
    for key, value in table.items():
        path = f"{where}{key}"
        if key not in schema:
            raise UsageError(
                f"unknown config key {path!r}{_did_you_mean(key, list(schema), where)}"
            )
        sub = schema[key]
        if isinstance(sub, dict):
            if not isinstance(value, dict):
                raise UsageError(f"config key {path!r} must be a table ([{path}]), got {value!r}")
            _check_keys(value, sub, path + ".")
        elif sub == "model parameters" and not isinstance(value, dict):
            raise UsageError(
                f"config key 'model' must be a table ([model] with name = ...), got {value!r}"
            )


def _parse_mu(value) -> np.ndarray:
    """μ from a number, a list, a table {start, stop, num}, or 'a,b,c' / 'start:stop:num'."""
    try:
        mu = _mu_values(value)
    except (TypeError, ValueError):
        raise UsageError(
            f"cannot read mu {value!r}; use a list, {{start, stop, num}}, 'a,b,c' or 'a:b:num'"
        ) from None
    if mu.ndim != 1 or mu.size == 0 or not np.all(np.isfinite(mu)):
        raise UsageError(f"mu must be a non-empty list of finite numbers, got {value!r}")
    return mu


def _mu_values(value) -> np.ndarray:
    if isinstance(value, str):
        text = value.strip()
        if ":" in text:
            start, stop, num = text.split(":")
            return np.linspace(float(start), float(stop), int(num))
        return np.array([float(x) for x in text.split(",") if x.strip()])
    if isinstance(value, dict):
        extra = set(value) - {"start", "stop", "num"}
        if extra or len(value) != 3:
            bad = sorted(extra)[0] if extra else "mu"
            raise UsageError(
                f"mu as a table needs exactly start, stop, num; got {sorted(value)}"
                + (_did_you_mean(bad, ["start", "stop", "num"]) if extra else "")
            )
        return np.linspace(float(value["start"]), float(value["stop"]), int(value["num"]))
    return np.atleast_1d(np.asarray(value, dtype=np.float64))


def _parse_temperature(value, energy_unit: str) -> float:
    """T in energy units; a string ending in K ('300 K') is converted with k_B."""
    from . import units

    kelvin = isinstance(value, str) and value.strip().upper().endswith("K")
    try:
        number = float(value.strip()[:-1]) if kelvin else float(value)
    except (TypeError, ValueError):
        raise UsageError(
            f"cannot read temperature {value!r}; use a number (energy units) or '300 K'"
        ) from None
    if kelvin:
        try:
            number = float(units.temperature_to_energy(number, energy=energy_unit))
        except ValueError as err:
            raise UsageError(_first_line(err)) from None
    if not np.isfinite(number) or number < 0:
        raise UsageError(f"temperature must be finite and >= 0, got {value!r}")
    return number


def _parse_shape(value) -> list[int]:
    if isinstance(value, str):
        parts = value.lower().replace("x", ",").replace("×", ",").split(",")
        try:
            value = [int(p) for p in parts if p.strip()]
        except ValueError:
            raise UsageError(f"cannot read mesh {value!r}; use e.g. 60x60 or 60") from None
    shape = [int(v) for v in np.atleast_1d(value)]
    if not shape or any(n < 1 for n in shape):
        raise UsageError(f"mesh shape must be positive integers, got {value!r}")
    return shape


def _parse_quantities(value) -> tuple[str, ...]:
    names = value.split(",") if isinstance(value, str) else list(value)
    out = []
    for raw in names:
        name = str(raw).strip()
        key = _QUANTITY_ALIASES.get(name, name)
        if key not in _QUANTITIES:
            raise UsageError(f"unknown quantity {name!r}{_did_you_mean(name, list(_QUANTITIES))}")
        if key not in out:
            out.append(key)
    if not out:
        raise UsageError("no quantities requested")
    return tuple(out)


def job_from_config(config: dict[str, Any], source: str = "config") -> Job:
    """Validate a parsed TOML config (see ``qgeo example-config``) into a :class:`Job`."""
    _check_keys(config, _SCHEMA, "")
    job = Job(source=source, config=config, timing_repeats=0)
    model = dict(config.get("model", {}))
    if model:
        if "name" not in model:
            raise UsageError('config table [model] needs name = "..." (e.g. "Haldane")')
        job.model_name = _resolve_model(model.pop("name"))[0]
        job.model_params = model
    from . import units as _units

    units = config.get("units", {})
    job.energy_unit = str(units.get("energy", job.energy_unit))
    job.length_unit = str(units.get("length", job.length_unit))
    for key, value, table in (
        ("energy", job.energy_unit, _units.ENERGY_UNITS),
        ("length", job.length_unit, _units.LENGTH_UNITS),
    ):
        if value not in table:
            raise UsageError(f"unknown units.{key} {value!r}{_did_you_mean(value, list(table))}")
    if "mesh" in config:
        job.mesh = dict(config["mesh"])
    if "mu" in config:
        job.mu = _parse_mu(config["mu"])
    else:
        job.mu = np.array([0.0])
    if "temperature" in config:
        job.temperature_input = config["temperature"]
    job.temperature = _parse_temperature(job.temperature_input, job.energy_unit)
    if "quantities" in config:
        job.quantities = _parse_quantities(config["quantities"])
        job.quantities_given = True
    output = config.get("output", {})
    job.out_dir = str(output.get("dir", "qgeo_out"))
    job.prefix = _check_prefix(output.get("prefix", job.prefix))
    if "plots" in output:
        if not isinstance(output["plots"], bool):
            raise UsageError(f"output.plots must be true or false, got {output['plots']!r}")
        job.plots = output["plots"]
    if "precision" in config:
        job.precision = _parse_choice(config["precision"], PRECISIONS, "precision")
    if "device" in config:
        job.device = _parse_choice(config["device"], DEVICES, "device")
    opts = config.get("options", {})
    try:
        job.chunk_size = int(opts.get("chunk_size", job.chunk_size))
        job.g_factor = float(opts.get("g_factor", job.g_factor))
        job.tau = float(opts["tau"]) if "tau" in opts else None
        job.degen_tol = float(opts.get("degen_tol", job.degen_tol))
        job.timing_repeats = int(opts.get("timing_repeats", job.timing_repeats))
        job.block_size = _check_block_size(opts.get("block_size", job.block_size))
        if "chern_bands" in opts:
            job.chern_bands = tuple(int(b) for b in np.atleast_1d(opts["chern_bands"]))
    except (TypeError, ValueError) as err:
        raise UsageError(f"bad value in [options]: {_first_line(err)}") from None
    job.description = str(config.get("description", ""))
    return job


def _parse_choice(value, choices: Sequence[str], what: str) -> str:
    """One of ``choices`` (case-insensitive), else a one-line error with a "did you mean"."""
    text = str(value).strip().lower()
    if text not in choices:
        raise UsageError(f"unknown {what} {value!r}{_did_you_mean(str(value), list(choices))}")
    return text


def _check_prefix(value) -> str:
    """The output file stem: a plain name, so that no output escapes the output directory."""
    from ._validate import safe_output_name

    try:
        return safe_output_name(str(value), what="output prefix")
    except ValueError as err:
        raise UsageError(str(err)) from None


def _check_block_size(value) -> int:
    if isinstance(value, bool) or int(value) != value or int(value) < 1:
        raise UsageError(f"options.block_size must be an integer >= 1, got {value!r}")
    return int(value)


def load_config(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise UsageError(f"config file {str(path)!r} not found") from None
    except tomllib.TOMLDecodeError as err:
        raise UsageError(f"{path}: invalid TOML: {_first_line(err)}") from None


EXAMPLE_CONFIG = """\
# qgeo run config (TOML). Every key is optional (default model: Haldane); unknown keys are errors.
description = "Haldane Chern insulator: orbital magnetization and Hall conductivity vs mu"
quantities = ["chern", "orbital_magnetization", "ahc"]   # also: spin_magnetization
precision = "float64"          # or "float32": single-precision linear algebra (faster, ~1e-5 rel.)
device = "auto"                # "cpu", "gpu" (needs jax[cuda12]) or "auto" (JAX's default)
temperature = 0.005            # energy units (k_B = 1), or a string such as "300 K"
mu = {start = -1.0, stop = 1.0, num = 9}   # or a list: mu = [-0.5, 0.0, 0.5]

[model]                        # any built-in model: `qgeo models` lists them and their parameters
name = "Haldane"
t1 = -1.0
t2 = 0.15
phi = 1.5707963267948966
delta = 0.2

[mesh]                         # lattice: shape (points per reciprocal vector), shift (mesh steps)
shape = [60, 60]               # continuum: shape = [n_radial, n_angle], k_max, kind = "polar"|"box"
shift = 0.0

[units]                        # the model's energy and length units (for the converted columns)
energy = "eV"                  # eV, meV, J, Ry, Ha
length = "angstrom"            # angstrom, nm, bohr, m

[output]
dir = "qgeo_out"
prefix = "haldane"             # writes qgeo_out/haldane.npz and qgeo_out/haldane.json
plots = true                   # + PNGs: haldane_<quantity>.png vs mu, haldane_bands.png

[options]
chunk_size = 256               # k-points per vectorised chunk (memory bound)
g_factor = 2.0                 # spin magnetization M^S = -g mu_B <S> f0, S = sigma/2
# tau = 10.0                   # relaxation time (hbar/energy units) for kinetic_*_extrinsic
degen_tol = 1e-8               # |E_n - E_m| below this counts as degenerate
# chern_bands = [0]            # default: the lower half of the bands
timing_repeats = 0             # >0: also time that many steady-state repeats
block_size = 16                # mu values per block: each finished block is saved (see --resume)
"""


# --- quantities ---------------------------------------------------------------------------------


class Output(NamedTuple):
    """One result array with its unit; ``columns`` = [(header, component)] shown in the μ table."""

    key: str
    value: np.ndarray
    unit: str
    description: str
    columns: tuple[tuple[str, int], ...] = ()
    quantity: str = ""  # the quantity (key of _QUANTITIES) it belongs to; set when assembled


@dataclasses.dataclass
class Context:
    job: Job
    model: Any
    mesh: Any
    mu: Any
    temperature: Any
    band_ranges: np.ndarray  # (n_bands, 2): min and max of each band over the mesh
    timings: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)
    progress: Any = None  # a _Progress (begin(label) / step_done()) or None

    @property
    def dim(self) -> int:
        return self.model.dim

    @property
    def lattice(self) -> bool:
        return self.model.is_lattice

    def timed(self, label: str, fn: Callable[[], Any]):
        """Run ``fn`` once (compile + run), then ``timing_repeats`` more times (steady state)."""
        import jax

        t0 = time.perf_counter()
        result = jax.block_until_ready(fn())
        first = time.perf_counter() - t0
        steady = []
        for _ in range(self.job.timing_repeats):
            t0 = time.perf_counter()
            jax.block_until_ready(fn())
            steady.append(time.perf_counter() - t0)
        self.timings[label] = {
            "first_call_s": first,
            "steady_state_s": min(steady) if steady else None,
        }
        return result


def _vector_columns(ctx: Context, symbol: str, unit: str, z_only: bool):
    comps = [("z", 2)] if (z_only and ctx.dim == 2) else [("x", 0), ("y", 1), ("z", 2)]
    return tuple((f"{symbol}_{c} ({unit})", i) for c, i in comps)


def _lengths(ctx):
    return {"angstrom": "Å", "bohr": "bohr"}.get(ctx.job.length_unit, ctx.job.length_unit)


def _q_orbital_magnetization(ctx: Context) -> list[Output]:
    from . import orbital_magnetization, units

    job, L, E = ctx.job, _lengths(ctx), ctx.job.energy_unit
    m = np.asarray(
        ctx.timed(
            "orbital_magnetization",
            lambda: orbital_magnetization(
                ctx.model,
                ctx.mesh,
                mu=ctx.mu,
                temperature=ctx.temperature,
                degen_tol=job.degen_tol,
                chunk_size=job.chunk_size,
            ),
        )
    )
    model_unit = f"e·{E}·{L}²/ħ per {_power(L, ctx.dim)}"
    conv = dict(dim=ctx.dim, energy=job.energy_unit, length=job.length_unit)
    si = units.orbital_magnetization(m, to="SI", **conv)
    si_unit = "A" if ctx.dim == 2 else ("A/m" if ctx.dim == 3 else "A·m")
    volume = np.asarray(ctx.model.cell_volume()) if ctx.lattice else 1.0
    per = "cell" if ctx.lattice else f"{_power(L, ctx.dim)}"
    mub = units.orbital_magnetization(m, to="bohr_magneton_per_cell", cell_volume=volume, **conv)
    return [
        Output(
            "orbital_magnetization",
            m,
            model_unit,
            "M^O (seed eq. 5), model units",
            _vector_columns(ctx, "M^O", "model", z_only=True),
        ),
        Output(
            f"orbital_magnetization_bohr_magneton_per_{'cell' if ctx.lattice else 'volume'}",
            mub,
            f"μ_B per {per}",
            f"M^O in Bohr magnetons per {per}",
            _vector_columns(ctx, "M^O", f"μ_B/{per}", z_only=True),
        ),
        Output("orbital_magnetization_si", si, si_unit, "M^O in SI"),
    ]


def _q_spin_magnetization(ctx: Context) -> list[Output]:
    from . import spin_magnetization, units

    job, L = ctx.job, _lengths(ctx)
    m = np.asarray(
        ctx.timed(
            "spin_magnetization",
            lambda: spin_magnetization(
                ctx.model,
                ctx.mesh,
                mu=ctx.mu,
                temperature=ctx.temperature,
                g_factor=job.g_factor,
                chunk_size=job.chunk_size,
            ),
        )
    )
    outs = [
        Output(
            "spin_magnetization",
            m,
            f"μ_B per {_power(L, ctx.dim)}",
            f"M^S = -g μ_B Σ<S> f0 (seed eq. 1, S = σ/2, g = {job.g_factor})",
            () if ctx.lattice else _vector_columns(ctx, "M^S", f"μ_B/{_power(L, ctx.dim)}", False),
        )
    ]
    if ctx.lattice:
        cell = units.spin_magnetization(
            m,
            dim=ctx.dim,
            length=job.length_unit,
            to="bohr_magneton_per_cell",
            cell_volume=np.asarray(ctx.model.cell_volume()),
        )
        outs.append(
            Output(
                "spin_magnetization_bohr_magneton_per_cell",
                cell,
                "μ_B per cell",
                "M^S in Bohr magnetons per cell",
                _vector_columns(ctx, "M^S", "μ_B/cell", False),
            )
        )
    return outs


def _q_ahc(ctx: Context) -> list[Output]:
    from . import anomalous_hall_conductivity, units

    job, L = ctx.job, _lengths(ctx)
    s = np.asarray(
        ctx.timed(
            "ahc",
            lambda: anomalous_hall_conductivity(
                ctx.model,
                ctx.mesh,
                mu=ctx.mu,
                temperature=ctx.temperature,
                degen_tol=job.degen_tol,
                chunk_size=job.chunk_size,
            ),
        )
    )
    model_unit = "e²/ħ" if ctx.dim == 2 else f"e²/ħ per {_power(L, ctx.dim - 2)}"
    si = units.hall_conductivity(s, dim=ctx.dim, length=job.length_unit, to="SI")
    outs = [
        Output("ahc", s, model_unit, "intrinsic AHC (σ_yz, σ_zx, σ_xy), electron charge −e"),
        Output("ahc_si", si, "S" if ctx.dim == 2 else "S/m", "AHC in SI"),
    ]
    if ctx.dim == 2:
        outs.append(
            Output(
                "ahc_e2_over_h",
                units.hall_conductivity(s, dim=2, to="e2_over_h"),
                "e²/h",
                "AHC in e²/h (σ_xy = −C e²/h in a gap)",
                (("σ_xy (e²/h)", 2),),
            )
        )
    else:
        outs[1] = outs[1]._replace(columns=_vector_columns(ctx, "σ", "S/m", False))
    return outs


def _chern_bands(ctx: Context) -> tuple[int, ...]:
    """options.chern_bands, or by default all bands below the widest gap of the mesh spectrum
    (the lower half when no band is separated from the next)."""
    n = ctx.model.norb
    bands = ctx.job.chern_bands
    if not bands:
        lo, hi = ctx.band_ranges[:, 0], ctx.band_ranges[:, 1]
        gaps = np.minimum.accumulate(lo[::-1])[::-1][1:] - np.maximum.accumulate(hi)[:-1]
        below = int(np.argmax(gaps)) + 1 if gaps.size and gaps.max() > 0 else max(1, n // 2)
        bands = tuple(range(below))
    if any(not 0 <= b < n for b in bands):
        raise UsageError(f"options.chern_bands = {list(bands)} must be band indices in [0, {n})")
    return bands


def _q_chern(ctx: Context) -> list[Output]:
    from . import monkhorst_pack
    from ._chern import chern_number

    job = ctx.job
    bands = _chern_bands(ctx)
    unshifted = monkhorst_pack(ctx.model, ctx.mesh.shape)  # plaquettes need shift = 0
    kubo = ctx.timed(
        "chern (kubo)",
        lambda: chern_number(
            ctx.model,
            ctx.mesh,
            list(bands),
            method="kubo",
            degen_tol=job.degen_tol,
            chunk_size=job.chunk_size,
        ),
    )
    plaq = ctx.timed(
        "chern (plaquette)",
        lambda: chern_number(
            ctx.model, unshifted, list(bands), method="plaquette", chunk_size=job.chunk_size
        ),
    )
    note = f"bands {list(bands)}; C = (1/2π) Σ_occ ∫ Ω^xy"
    # Numerical honesty: the plaquette sum is an integer even where the gap closes, so report the
    # smallest direct gap on the mesh and whether both routes agree with one integer.
    from ._validate import CHERN_TOL, direct_gap

    gap_tol = max(1e3 * job.degen_tol, 1e-6)
    gap, _, near = direct_gap(
        ctx.model, ctx.mesh, list(bands), tol=gap_tol, chunk_size=job.chunk_size
    )
    nearest = round(float(plaq))
    deviation = max(abs(float(kubo) - nearest), abs(float(plaq) - nearest))
    return [
        Output("chern_kubo", np.asarray(kubo), "1", "Chern number, Kubo integral, " + note),
        Output(
            "chern_plaquette",
            np.asarray(plaq),
            "1",
            "Chern number, Fukui–Hatsugai plaquettes, " + note,
        ),
        Output(
            "chern_min_direct_gap",
            np.asarray(gap),
            ctx.job.energy_unit,
            f"smallest direct gap between bands {list(bands)} and the others on the mesh",
        ),
        Output(
            "chern_near_degenerate_points",
            np.asarray(near),
            "1",
            f"mesh points where that gap is below {gap_tol:g} (not separated: C not defined)",
        ),
        Output(
            "chern_is_quantized",
            np.asarray(deviation <= CHERN_TOL and near == 0),
            "1",
            f"both routes within {CHERN_TOL:g} of one integer and no near-degenerate point",
        ),
    ]


def _kinetic(part: str, mechanism: str) -> Callable[[Context], list[Output]]:
    """α^{ij} (δM^i = α^{ij} E_j) of seed eqs. (6)-(9), by ``_kinetic.kinetic_magnetization``."""
    name = f"kinetic_{part}_{mechanism}"
    symbol = f"α{'S' if part == 'spin' else 'O'}{mechanism[:3]}"

    def compute(ctx: Context) -> list[Output]:
        from . import units
        from ._kinetic import kinetic_magnetization

        job, L, E = ctx.job, _lengths(ctx), ctx.job.energy_unit
        extra = {"tau": job.tau} if mechanism == "extrinsic" else {}
        if part == "spin":
            extra["g_factor"] = job.g_factor
        alpha = np.asarray(
            ctx.timed(
                name,
                lambda: kinetic_magnetization(
                    ctx.model,
                    ctx.mesh,
                    mu=ctx.mu,
                    temperature=ctx.temperature,
                    part=part,
                    mechanism=mechanism,
                    degen_tol=job.degen_tol,
                    chunk_size=job.chunk_size,
                    **extra,
                ),
            )
        )
        field = "V/Å" if (E, L) == ("eV", "Å") else f"{E}/(e·{L})"
        volume = np.asarray(ctx.model.cell_volume()) if ctx.lattice else 1.0
        per = "cell" if ctx.lattice else _power(L, ctx.dim)
        if part == "spin":
            model_unit = f"μ_B per {_power(L, ctx.dim)} per ({E}/(e·{L}))"
            mub = alpha * volume
        else:
            model_unit = f"e·{E}·{L}²/ħ per {_power(L, ctx.dim)} per ({E}/(e·{L}))"
            mub = units.orbital_magnetization(
                alpha,
                dim=ctx.dim,
                energy=job.energy_unit,
                length=job.length_unit,
                to="bohr_magneton_per_cell",
                cell_volume=volume,
            )
        # Show the components a field in the model's plane can produce that are not zero.
        scale = np.max(np.abs(mub))
        comps = [
            (i, j)
            for j in range(ctx.dim)
            for i in range(3)
            if np.max(np.abs(mub[:, i, j])) > max(1e-10 * scale, 1e-300)
        ]
        comps = comps[:6] or [(0, 0)]
        columns = tuple((f"{symbol}_{'xyz'[i]}{'xyz'[j]}", (i, j)) for i, j in comps)
        what = f"{part} {mechanism} kinetic magnetization tensor, δM^i = α^ij E_j"
        return [
            Output(name, alpha, model_unit, what + " (model units)"),
            Output(
                f"{name}_bohr_magneton_per_{'cell' if ctx.lattice else 'volume'}",
                mub,
                f"μ_B per {per} per ({field})",
                what,
                columns,
            ),
        ]

    return compute


def _need_spin(ctx: Context, name: str) -> None:
    if ctx.model.spin_operators() is None:
        raise UsageError(
            f"{name} needs a spinful model; {ctx.job.model_name} has no spin operators "
            "(use Rashba or RashbaLattice)"
        )


def _need_chern_model(ctx: Context, name: str) -> None:
    from ._validate import MIN_CHERN_POINTS

    if not (ctx.lattice and ctx.dim == 2):
        raise UsageError(
            f"the Chern number needs a 2D lattice model; {ctx.job.model_name} is not one"
        )
    if min(ctx.mesh.shape) < MIN_CHERN_POINTS:
        raise UsageError(
            f"the Chern number needs at least {MIN_CHERN_POINTS} k-points per axis "
            f"(mesh {'x'.join(map(str, ctx.mesh.shape))}); use e.g. --mesh 60x60"
        )
    _chern_bands(ctx)


def _need_kinetic(part: str, mechanism: str) -> Callable[[Context, str], None]:
    def check(ctx: Context, name: str) -> None:
        try:
            from ._kinetic import kinetic_magnetization  # noqa: F401
        except ImportError:
            raise UsageError(f"{name} is not available in this installation of qgeo_jax") from None
        if part == "spin":
            _need_spin(ctx, name)
        if mechanism == "extrinsic":
            if ctx.job.tau is None or not ctx.job.tau > 0:
                raise UsageError(
                    f"{name} needs a relaxation time options.tau > 0 (--tau, units ħ/energy)"
                )
            if not ctx.temperature > 0:
                raise UsageError(f"{name} is a Fermi-surface quantity: it needs temperature > 0")

    return check


class Quantity(NamedTuple):
    """A quantity: ``compute(ctx)`` → outputs; ``check(ctx, name)`` runs before any work."""

    compute: Callable[[Context], list[Output]]
    help: str
    check: Callable[[Context, str], None] | None = None


_QUANTITIES: dict[str, Quantity] = {
    "chern": Quantity(
        _q_chern,
        "Chern number of options.chern_bands, Kubo and plaquette routes (2D lattice)",
        _need_chern_model,
    ),
    "orbital_magnetization": Quantity(
        _q_orbital_magnetization,
        "M^O vs μ, modern theory (seed eq. 5): model units, μ_B per cell, SI",
    ),
    "spin_magnetization": Quantity(
        _q_spin_magnetization,
        "M^S vs μ (seed eq. 1, S = σ/2, g-factor): μ_B per cell / per L^d",
        _need_spin,
    ),
    "ahc": Quantity(_q_ahc, "intrinsic anomalous Hall conductivity vs μ: e²/ħ, e²/h (2D), SI"),
    "kinetic_spin_extrinsic": Quantity(
        _kinetic("spin", "extrinsic"),
        "Edelstein α, δM^S = α E (seed eq. 6); needs options.tau, T > 0",
        _need_kinetic("spin", "extrinsic"),
    ),
    "kinetic_spin_intrinsic": Quantity(
        _kinetic("spin", "intrinsic"),
        "intrinsic spin α via the spin Berry curvature (seed eq. 7)",
        _need_kinetic("spin", "intrinsic"),
    ),
    "kinetic_orbital_extrinsic": Quantity(
        _kinetic("orbital", "extrinsic"),
        "orbital Edelstein α (seed eq. 8); needs options.tau, T > 0",
        _need_kinetic("orbital", "extrinsic"),
    ),
    "kinetic_orbital_intrinsic": Quantity(
        _kinetic("orbital", "intrinsic"),
        "intrinsic orbital α, magnetoelectric tensor F (seed eqs. 9-10)",
        _need_kinetic("orbital", "intrinsic"),
    ),
}
_QUANTITY_ALIASES = {
    "anomalous_hall_conductivity": "ahc",
    "chern_number": "chern",
    "edelstein": "kinetic_spin_extrinsic",
}


# --- running ------------------------------------------------------------------------------------


def _build_mesh(job: Job, model):
    """The k-mesh of ``job`` for ``model`` (and its description for the provenance)."""
    try:
        return _make_mesh(job, model)
    except (TypeError, ValueError) as err:  # bad values that got past the schema
        raise UsageError(f"bad [mesh] / --mesh: {_first_line(err)}") from None


def _make_mesh(job: Job, model):
    from . import continuum_mesh, monkhorst_pack

    mesh = dict(job.mesh)
    if model.is_lattice:
        for key in ("k_max", "kind"):
            if key in mesh:
                raise UsageError(
                    f"mesh.{key} applies to continuum models; {job.model_name} is a lattice model"
                )
        default = {1: [400], 2: [60, 60], 3: [16, 16, 16]}[model.dim]
        shape = _parse_shape(mesh.get("shape", default))
        if len(shape) == 1 and model.dim > 1:
            shape = shape * model.dim
        mesh["shape"] = shape
        return mesh, monkhorst_pack(model, shape, shift=mesh.get("shift"))
    if "shift" in mesh:
        raise UsageError(
            f"mesh.shift applies to lattice models; {job.model_name} is a continuum model"
        )
    kind = str(mesh.get("kind", "polar"))
    n = _parse_shape(mesh.get("shape", [200, 64] if kind == "polar" else [80] * model.dim))
    n = n * 2 if (kind == "polar" and len(n) == 1) else n
    mesh.update(kind=kind, shape=n, k_max=float(mesh.get("k_max", model.k_cutoff)))
    return mesh, continuum_mesh(model, k_max=mesh["k_max"], n=n, kind=kind)


def _band_ranges(model, mesh, chunk_size):
    """(min, max) of every band over the mesh, from the same points the responses use."""
    import jax
    import jax.numpy as jnp

    def chunk(c):
        k, w = mesh.chunk(c, chunk_size)
        e = jax.vmap(lambda kk: jnp.linalg.eigvalsh(model.hamiltonian(kk)))(k)
        used = (w > 0)[:, None]
        return jnp.min(jnp.where(used, e, jnp.inf), 0), jnp.max(jnp.where(used, e, -jnp.inf), 0)

    chunk_size = min(chunk_size, mesh.size)
    lo, hi = jax.lax.map(chunk, jnp.arange(mesh.num_chunks(chunk_size)))
    return np.stack([np.min(np.asarray(lo), 0), np.max(np.asarray(hi), 0)], axis=-1)


def _gap_index(mu: float, ranges: np.ndarray) -> int | None:
    """Number of bands below μ if μ lies in a gap of the mesh spectrum, else None."""
    below, above = ranges[:, 1] < mu, ranges[:, 0] > mu
    return int(below.sum()) if np.all(below | above) else None


@dataclasses.dataclass
class Result:
    job: Job
    model: Any
    mesh_info: dict[str, Any]
    band_ranges: np.ndarray
    outputs: list[Output]
    timings: dict[str, dict[str, float]]
    chern_bands: tuple[int, ...] | None
    wall_s: float
    blocks: dict[str, Any] | None = None  # block bookkeeping (total, loaded, computed, directory)
    store: Any = None  # the _resume.BlockStore of a run with an output directory
    devices: tuple = ()  # the jax.Device objects the run used


class Interrupted(Exception):
    """SIGINT / SIGTERM during a run with saved blocks: says how far it got and how to resume."""

    def __init__(self, state: dict, directory, exit_code: int):
        done = len(state.get("loaded", [])) + len(state.get("computed", []))
        super().__init__(
            f"interrupted after {done} of {state.get('total', '?')} blocks; the finished blocks "
            f"are kept in {directory}: run the same command with --resume to continue"
        )
        self.exit_code = exit_code


def _plan_blocks(ctx: Context):
    """[(key, compute)] and labels: the μ-independent Chern number, then chunks of μ."""
    job = ctx.job
    blocks, labels = [], {}
    if "chern" in job.quantities:
        blocks.append(("chern", lambda: _compute_block(ctx, ["chern"], None)))
        labels["chern"] = "Chern number"
    names = [n for n in job.quantities if n != "chern"]
    n_mu = len(ctx.mu)
    if names:
        for i, start in enumerate(range(0, n_mu, job.block_size)):
            sl = (start, min(start + job.block_size, n_mu))
            key = f"mu-{i:04d}"
            blocks.append((key, lambda sl=sl: _compute_block(ctx, names, sl)))
            labels[key] = f"μ {sl[0] + 1}-{sl[1]} of {n_mu}"
    return blocks, labels


def _compute_block(ctx: Context, names: list[str], sl: tuple[int, int] | None):
    """Arrays and JSON metadata (units, descriptions, table columns, timings) of one block."""
    mu = ctx.mu if sl is None else ctx.mu[sl[0] : sl[1]]
    sub = dataclasses.replace(ctx, mu=mu, timings={})
    where = "" if sl is None else f", μ {sl[0] + 1}-{sl[1]} of {len(ctx.mu)}"
    arrays, entries = {}, []
    for name in names:
        if ctx.progress is not None:
            ctx.progress.begin(name + where)
        for o in _QUANTITIES[name].compute(sub):
            arrays[o.key] = np.asarray(o.value)
            columns = [[h, list(c) if isinstance(c, tuple) else c] for h, c in o.columns]
            entries.append(
                dict(
                    quantity=name,
                    key=o.key,
                    unit=o.unit,
                    description=o.description,
                    columns=columns,
                )
            )
        if ctx.progress is not None:
            ctx.progress.step_done()
    return arrays, {"outputs": entries, "timings": sub.timings, "mu_slice": sl}


def _assemble(job: Job, done: dict, keys: list[str], computed: list[str]):
    """Outputs in the order of ``job.quantities`` (μ blocks concatenated), merged timings."""
    parts: dict[str, list[np.ndarray]] = {}
    entries: dict[str, dict] = {}
    timings: dict[str, dict[str, Any]] = {}
    for key in keys:
        arrays, meta = done[key]
        for e in meta["outputs"]:
            parts.setdefault(e["key"], []).append(arrays[e["key"]])
            entries.setdefault(e["key"], e)
        if key in computed:  # timings of blocks loaded from disk belong to the earlier run
            for label, t in meta.get("timings", {}).items():
                merged = timings.setdefault(label, dict(t, blocks=0, total_s=0.0))
                merged["blocks"] += 1
                merged["total_s"] += t["first_call_s"]
    outputs = []
    for name in job.quantities:
        for okey, e in entries.items():
            if e["quantity"] != name:
                continue
            value = parts[okey][0] if name == "chern" else np.concatenate(parts[okey], axis=0)
            columns = tuple((h, tuple(c) if isinstance(c, list) else c) for h, c in e["columns"])
            outputs.append(Output(okey, value, e["unit"], e["description"], columns, name))
    return outputs, timings


def _run_identity(job: Job, model, mesh_info: dict, ctx: Context) -> dict[str, Any]:
    """Everything that determines the numbers of a run (hashed to guard --resume)."""
    import equinox
    import jax
    import jaxlib

    from . import __version__

    return {
        "model": {"name": job.model_name, "parameters": model_parameters(model)},
        "mesh": mesh_info,
        "mu": [float(x) for x in np.asarray(job.mu)],
        "temperature": float(job.temperature),
        "quantities": list(job.quantities),
        "units": {"energy": job.energy_unit, "length": job.length_unit},
        "options": {
            "chunk_size": job.chunk_size,
            "g_factor": job.g_factor,
            "tau": job.tau,
            "degen_tol": job.degen_tol,
            "chern_bands": list(_chern_bands(ctx)) if "chern" in job.quantities else None,
            "block_size": job.block_size,
        },
        "software": {
            "qgeo_jax": __version__,
            "jax": jax.__version__,
            "jaxlib": jaxlib.__version__,
            "equinox": equinox.__version__,
            "numpy": np.__version__,
        },
        # Summation order (hence round-off) depends on the backend and the device count.
        "backend": jax.default_backend(),
        "devices": len(jax.devices()),
        "x64": bool(jax.config.jax_enable_x64),
        "precision": job.precision,
        "device": job.device,
    }


def _select_devices(kind: str) -> tuple:
    """The devices a run uses: ``"auto"`` the package default (:func:`qgeo_jax._bz.default_devices`:
    every GPU, or every CPU device — one per core, see ``--cores``), ``"gpu"`` every GPU JAX sees,
    ``"cpu"`` every CPU device."""
    import jax

    from ._bz import default_devices

    several = jax.process_count() > 1 and jax.default_backend() == "cpu"
    if kind == "auto" or (kind == "cpu" and several):
        # Several processes (``--workers``, jax.distributed): the CPU devices of every process.
        return tuple(default_devices())
    try:
        devices = tuple(jax.devices(kind))
    except RuntimeError:  # "Unknown backend: 'gpu' requested, but no platforms ..."
        devices = ()
    if not devices:
        if kind == "gpu":
            raise UsageError(
                'no GPU visible to JAX; install jax[cuda12] (pip install -U "jax[cuda12]") '
                'or use device = "cpu" / --device cpu'
            )
        raise UsageError(f"no {kind} device visible to JAX")
    return devices


def _apply_precision(job: Job, model, mesh):
    """float32: cast the model's and the mesh's floating leaves (``_precision.cast_precision``), so
    H(k), eigh and the geometry run in single precision while the k-sum stays float64."""
    if job.precision == "float64":
        return model, mesh
    try:
        from ._precision import cast_precision
    except ImportError:
        raise UsageError(
            f"precision = {job.precision!r} is not available in this installation of qgeo_jax"
        ) from None
    return cast_precision(model, job.precision), cast_precision(mesh, job.precision)


def run_job(
    job: Job, *, log: Callable[[str], None] | None = None, progress: _Progress | None = None
) -> Result:
    """Build the model and mesh of ``job`` and compute every requested quantity, block by block.

    With ``job.out_dir`` every finished block is saved in ``OUT/PREFIX.partial`` (and loaded from
    there with ``job.resume``); ``log`` receives warnings and one line per block; ``progress``
    (a :class:`_Progress`) is told the planned steps (quantity × block) and each one's start and
    end. Everything runs on the devices of ``job.device`` in ``job.precision``.
    """
    import jax

    t_start = time.perf_counter()
    from . import _config  # noqa: F401  (x64 policy before any array is made)

    devices = _select_devices(job.device)
    local = [d for d in devices if d.process_index == jax.process_index()] or jax.local_devices()
    with jax.default_device(local[0]):
        return _run_job(job, log, progress, devices, t_start)


def _run_job(job, log, progress, devices, t_start) -> Result:
    from ._bz import with_devices

    _, model = build_model(job.model_name, job.model_params)
    mesh_info, mesh = _build_mesh(job, model)
    mesh_info["points"] = int(mesh.size)
    if job.device != "auto":
        mesh = with_devices(mesh, devices)
    model, mesh = _apply_precision(job, model, mesh)
    if job.chunk_size < 1:
        raise UsageError(f"options.chunk_size must be >= 1, got {job.chunk_size}")
    ctx = Context(
        job=job,
        model=model,
        mesh=mesh,
        mu=np.asarray(job.mu, dtype=np.float64),
        temperature=float(job.temperature),
        band_ranges=_band_ranges(model, mesh, job.chunk_size),
        progress=progress,
    )
    # Check every quantity's preconditions before spending time on any of them. Default
    # quantities the model cannot do (the Chern number of a continuum model) are dropped instead.
    kept = []
    for name in job.quantities:
        try:
            if _QUANTITIES[name].check is not None:
                _QUANTITIES[name].check(ctx, name)
            kept.append(name)
        except UsageError:
            if job.quantities_given:
                raise
    job.quantities = tuple(kept)
    ranges = ctx.band_ranges
    from ._resume import BlockStore, PartialResultsError, run_blocks
    from ._validate import mu_outside_bands, safe_child

    for text in mu_outside_bands(job.mu, ranges):
        (log or (lambda _t: None))("warning: " + text)
    blocks, labels = _plan_blocks(ctx)
    keys = [key for key, _ in blocks]
    n_names = len([n for n in job.quantities if n != "chern"])
    steps = [1 if key == "chern" else n_names for key in keys]
    if progress is not None:
        progress.plan(steps)
    store, state = None, {}
    if job.out_dir is not None:
        try:
            directory = safe_child(job.out_dir, f"{job.prefix}.partial")
            identity = _run_identity(job, model, mesh_info, ctx)
            identity["devices"] = [d.platform for d in devices]
            store = BlockStore(directory, identity, keys, resume=job.resume, log=log)
        except ValueError as err:  # includes PartialResultsError: other config, corrupted
            raise UsageError(_first_line(err)) from None
        except OSError as err:
            raise UsageError(f"cannot write partial results to {job.out_dir!r}: {err}") from None

    finished = [0]

    def block_finished(text: str) -> None:
        finished[0] += 1
        if progress is not None:
            progress.blocks_done(finished[0])
        if store is not None and log is not None:  # one line per saved or loaded block
            log(text)

    try:
        done = run_blocks(blocks, store, progress=block_finished, labels=labels, state=state)
    except PartialResultsError as err:  # a finished block that fails its checks on loading
        raise UsageError(_first_line(err)) from None
    except KeyboardInterrupt as stop:
        if store is None:
            raise
        raise Interrupted(state, store.directory, getattr(stop, "exit_code", 130)) from None
    outputs, timings = _assemble(job, done, keys, state["computed"])
    bands = _chern_bands(ctx) if "chern" in job.quantities else None
    info = {
        "total": len(keys),
        "loaded": state["loaded"],
        "computed": state["computed"],
        "block_size": job.block_size,
        "directory": None if store is None else str(store.directory),
    }
    return Result(
        job,
        model,
        mesh_info,
        ranges,
        outputs,
        timings,
        bands,
        time.perf_counter() - t_start,
        blocks=info,
        store=store,
        devices=tuple(devices),
    )


# --- progress -----------------------------------------------------------------------------------


class _Progress:
    """A progress display on stderr over the steps a run plans (one step = one quantity of one
    block), with the running step, steps done/total, elapsed time and ETA.

    ``live`` (stderr is a terminal): one line redrawn in place (``\\r``), refreshed by a daemon
    thread every ``tick`` seconds so the elapsed time moves during a long step; log lines are
    printed above it (:meth:`write`). Forced onto a file or pipe (``--progress``): one plain line
    per step, nothing redrawn. The cost is a few string formats per step: the run is not slowed.
    """

    def __init__(self, stream, *, live: bool, tick: float = 0.5, width: int = 24):
        self.stream, self.live, self.tick, self.width = stream, live, tick, width
        self.cum = [0]
        self.total = 0
        self.done = 0
        self.label = "starting"
        self.t0 = time.perf_counter()
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread = None
        self._drawn = False
        self._closed = False

    def plan(self, steps_per_block: Sequence[int], extra: int = 0) -> None:
        with self._lock:
            self.cum = list(np.cumsum([0, *steps_per_block]).astype(int))
            self.total = int(self.cum[-1]) + extra
        if self.live and self._thread is None:
            self._thread = threading.Thread(target=self._ticker, daemon=True)
            self._thread.start()

    def add_steps(self, n: int) -> None:
        with self._lock:
            self.total += n

    def begin(self, label: str) -> None:
        with self._lock:
            self.label = label
            self._draw()

    def step_done(self) -> None:
        with self._lock:
            self.done = min(self.done + 1, self.total)
            if self.live:
                self._draw()

    def blocks_done(self, n: int) -> None:
        """``n`` blocks finished (computed or loaded from a partial directory)."""
        with self._lock:
            if n < len(self.cum):
                self.done = max(self.done, int(self.cum[n]))
            if self.live:
                self._draw()

    def write(self, text: str) -> None:
        """A log line, printed above the live bar."""
        with self._lock:
            if self.live and self._drawn:
                self.stream.write("\r\x1b[K")
            self.stream.write(text + "\n")
            if self.live and self._drawn:
                self._draw()
            self.stream.flush()

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self.total and (self._drawn or not self.live):
                self.label = "done"
                self._draw()
                if self.live:
                    self.stream.write("\n")
                self.stream.flush()
            self._drawn = False
            self.live = False

    def line(self) -> str:
        elapsed = time.perf_counter() - self.t0
        total = max(self.total, 1)
        eta = "?" if not self.done else f"{elapsed / self.done * (total - self.done):.1f} s"
        if self.done >= self.total:
            eta = "0 s"
        fill = int(round(self.width * self.done / total))
        bar = "#" * fill + "-" * (self.width - fill)
        return (
            f"{PROG}: [{bar}] {self.done}/{self.total} steps  {self.label}  "
            f"elapsed {elapsed:.1f} s  ETA {eta}"
        )

    def _draw(self) -> None:
        if self.live:
            self.stream.write("\r" + self.line() + "\x1b[K")
        else:
            self.stream.write(self.line() + "\n")
        self.stream.flush()
        self._drawn = True

    def _ticker(self) -> None:
        while not self._stop.wait(self.tick):
            with self._lock:
                if self.live and self._drawn:
                    self._draw()


def _make_progress(job: Job, quiet: bool, stream=None) -> _Progress | None:
    """The bar: on when forced (``--progress``), else only if ``stream`` (stderr) is a terminal
    and the run is not ``--quiet`` (so redirected logs never get it)."""
    stream = sys.stderr if stream is None else stream
    tty = bool(getattr(stream, "isatty", lambda: False)())
    if job.progress == "on":
        return _Progress(stream, live=tty)
    if job.progress == "off" or quiet or not tty:
        return None
    return _Progress(stream, live=True)


# --- plots --------------------------------------------------------------------------------------

_PLOT_SYMBOLS = {
    "orbital_magnetization": "$M^O$",
    "spin_magnetization": "$M^S$",
    "ahc": "$\\sigma$",
}


def _gaps(ranges: np.ndarray) -> list[tuple[float, float]]:
    """Energy intervals between the bands (over the mesh) that no band enters."""
    lo, hi = ranges[:, 0], ranges[:, 1]
    out = []
    for i in range(1, len(ranges)):
        top, bottom = float(np.max(hi[:i])), float(np.min(lo[i:]))
        if bottom > top:
            out.append((top, bottom))
    return out


def _continuum_extent(model, k_max: float, mu: np.ndarray, temperature: float) -> float:
    """|k| range of a continuum model's line cut: twice the largest |k| at which a band comes
    within the μ window (widened by its span, 10 T and 2 % of the bands' range), at most k_max."""
    import jax
    import jax.numpy as jnp

    ks = np.linspace(0.0, k_max, 401)
    pts = np.zeros((ks.size, model.dim))
    pts[:, 0] = ks
    e = np.asarray(jax.vmap(lambda k: jnp.linalg.eigvalsh(model.hamiltonian(k)))(jnp.asarray(pts)))
    span = float(mu.max() - mu.min())
    pad = max(span, 10 * temperature, 0.02 * float(e.max() - e.min()))
    inside = np.any((e > mu.min() - pad) & (e < mu.max() + pad), axis=1)
    k_star = float(ks[inside].max()) if inside.any() else 0.0
    return k_max if k_star == 0.0 else min(k_max, 2.0 * k_star)


def _bands_figures(result: Result):
    """[(name, Figure)]: bands along the default path coloured by Ω^z (and by ⟨S⟩ when a spin
    quantity ran), with the μ range shaded."""
    from . import plotting

    job, model = result.job, result.model
    extent = None
    if not model.is_lattice:
        extent = _continuum_extent(
            model, float(result.mesh_info["k_max"]), np.asarray(job.mu), job.temperature
        )
    path = plotting.high_symmetry_path(model, n=240, extent=extent)
    colourings = [("bands", "berry_curvature" if model.dim >= 2 else None, "z")]
    if model.spin_operators() is not None and any("spin" in q for q in job.quantities):
        means = [  # colour by the largest ⟨S⟩_i (same points as the figure: one compile)
            np.mean(np.abs(plotting.band_quantity(model, path.points, "spin", component=c)[1]))
            for c in "xyz"
        ]
        colourings.append(("bands_spin", "spin", "xyz"[int(np.argmax(means))]))
    mu = np.asarray(job.mu)
    figures = []
    for name, color_by, comp in colourings:
        fig = plotting.plot_bands(
            model,
            path,
            color_by=color_by,
            component=comp,
            energy_unit=job.energy_unit,
            clip_percentile=98,
            figsize=(5.5, 4.2),
        )
        ax = fig.axes[0]
        if mu.max() > mu.min():
            ax.axhspan(mu.min(), mu.max(), color="tab:green", alpha=0.12, lw=0, label="μ range")
        else:
            ax.axhline(mu[0], color="tab:green", ls="--", lw=1, label="μ")
        ax.legend(frameon=False, loc="upper right", fontsize=8)
        if not model.is_lattice:
            ax.set_xlabel(f"$k_x$ (1/{_lengths_of(job)}), line cut through Γ")
        if color_by is not None:  # the colour bar with its unit
            unit = f"{_lengths_of(job)}²" if color_by == "berry_curvature" else "ħ"
            symbol = "Berry curvature Ω" if color_by == "berry_curvature" else "spin ⟨S⟩"
            fig.axes[-1].set_ylabel(f"{symbol}^{comp} ({unit})")
        what = {"berry_curvature": "coloured by Berry curvature Ω^z", "spin": "coloured by ⟨S⟩"}
        ax.set_title(f"{job.model_name}: bands {what.get(color_by, '')}".strip(), fontsize=9)
        figures.append((name, fig))
    return figures


def _lengths_of(job: Job) -> str:
    return {"angstrom": "Å"}.get(job.length_unit, job.length_unit)


def _mu_figures(result: Result):
    """[(quantity, Figure)]: each μ-dependent quantity against μ, in the converted unit of the
    printed table (the last output of the quantity that has table columns), band gaps shaded."""
    from . import plotting

    job = result.job
    mu = np.asarray(job.mu)
    gaps = _gaps(result.band_ranges)
    figures = []
    for name in job.quantities:
        if name == "chern":
            continue
        outs = [o for o in result.outputs if o.quantity == name]
        if not outs:
            continue
        with_cols = [o for o in outs if o.columns]
        o = with_cols[-1] if with_cols else outs[0]
        value = np.asarray(o.value)
        comps = None
        if o.columns:
            comps = ["".join("xyz"[i] for i in np.atleast_1d(c)) for _, c in o.columns]
        symbol = _PLOT_SYMBOLS.get(name, "$\\alpha$")
        style = {"marker": "o", "ms": 3} if mu.size <= 25 else {}
        fig = plotting.plot_vs_mu(
            mu,
            value,
            symbol,
            o.unit,
            components=comps,
            gaps=gaps,
            mu_unit=job.energy_unit,
            figsize=(5.5, 3.8),
            **style,
        )
        fig.axes[0].set_title(
            f"{job.model_name}, T = {job.temperature:g} {job.energy_unit}: {o.description}",
            fontsize=8,
        )
        figures.append((name, fig))
    return figures


def _write_plots(result: Result, log: Callable[[str], None]) -> list[Path]:
    """PNG files OUT/PREFIX_<quantity>.png and OUT/PREFIX_bands.png (Agg, no display). Without
    matplotlib: one warning line and no plots; a figure that fails is skipped with a warning."""
    job = result.job
    try:
        import matplotlib  # noqa: F401
        from matplotlib.backends.backend_agg import FigureCanvasAgg
    except ImportError:
        log(
            "warning: matplotlib is not installed, so no plots were written "
            "(pip install matplotlib, or --no-plots to silence this); the data files are written"
        )
        return []
    from ._resume import atomic_write
    from ._validate import safe_child

    out = Path(job.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    makers = [("μ plots", _mu_figures), ("band structure", _bands_figures)]
    for what, make in makers:
        try:
            figures = make(result)
        except (KeyboardInterrupt, UsageError):
            raise
        except Exception as err:  # a plot must never cost the data
            log(f"warning: {what} plot skipped: {type(err).__name__}: {_first_line(err)}")
            continue
        for name, fig in figures:
            FigureCanvasAgg(fig)  # Agg explicitly: never a display, whatever MPLBACKEND says
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=110)
            path = safe_child(out, f"{job.prefix}_{name}.png")
            data = buf.getvalue()
            atomic_write(path, lambda fh, data=data: fh.write(data))
            paths.append(path)
    return paths


# --- output -------------------------------------------------------------------------------------


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if hasattr(x, "shape") or isinstance(x, np.generic):
        arr = np.asarray(x)
        if np.iscomplexobj(arr):
            if not np.any(arr.imag):
                return _jsonable(arr.real)
            return {"real": arr.real.tolist(), "imag": arr.imag.tolist()}
        return arr.tolist()
    if isinstance(x, complex):
        return {"real": x.real, "imag": x.imag}
    if isinstance(x, float | int | str | bool) or x is None:
        return x
    return repr(x)


def model_parameters(model) -> dict[str, Any]:
    """All fields of a model (arrays as lists, complex as {real, imag}): the model that ran."""
    return {f.name: _jsonable(getattr(model, f.name)) for f in dataclasses.fields(model)}


def provenance(result: Result, files: dict[str, Any] | None = None) -> dict[str, Any]:
    import equinox
    import jax
    import jaxlib

    from . import __version__

    job = result.job
    return {
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "source": job.source,
        "description": job.description,
        "command": [PROG, *sys.argv[1:]],
        "model": {
            "name": job.model_name,
            "class": f"qgeo_jax.models.{type(result.model).__name__}",
            "given_parameters": _jsonable(job.model_params),
            "parameters": model_parameters(result.model),
            "dim": result.model.dim,
            "norb": result.model.norb,
        },
        "mesh": _jsonable(result.mesh_info),
        "mu": _jsonable(job.mu),
        "temperature": job.temperature,
        "temperature_input": _jsonable(job.temperature_input),
        "units": {
            "energy": job.energy_unit,
            "length": job.length_unit,
            "convention": "ħ = e = k_B = 1 inside the package; electron charge −e",
        },
        "options": {
            "chunk_size": job.chunk_size,
            "g_factor": job.g_factor,
            "tau": job.tau,
            "degen_tol": job.degen_tol,
            "chern_bands": None if result.chern_bands is None else list(result.chern_bands),
        },
        "config": _jsonable(job.config),
        "versions": {
            "qgeo_jax": __version__,
            "jax": jax.__version__,
            "jaxlib": jaxlib.__version__,
            "equinox": equinox.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        "platform": platform.platform(),
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "x64": bool(jax.config.jax_enable_x64),
        "precision": job.precision,
        "device": {
            "requested": job.device,
            "platform": result.devices[0].platform if result.devices else jax.default_backend(),
            "used": [str(d) for d in result.devices],
        },
        "files": files or {},
    }


def _write_outputs(result: Result, plots: Sequence[Path] = ()) -> tuple[Path, Path]:
    """OUT/PREFIX.npz and OUT/PREFIX.json (atomically); the JSON's provenance lists every file of
    the run (``files``: npz, json and the ``plots`` already written, names relative to OUT)."""
    job = result.job
    out = Path(job.out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"cannot create output directory {str(out)!r}: {err.strerror}") from None
    unit_map = {
        "mu": job.energy_unit,
        "temperature": job.energy_unit,
        "band_ranges": job.energy_unit,
    }
    unit_map |= {o.key: o.unit for o in result.outputs}
    arrays = {
        "mu": np.asarray(job.mu),
        "temperature": np.asarray(job.temperature),
        "band_ranges": result.band_ranges,
    } | {o.key: np.asarray(o.value) for o in result.outputs}
    doc = {
        "format": "qgeo_jax results v1",
        "results": {
            o.key: {
                "value": _jsonable(o.value),
                "unit": o.unit,
                "description": o.description,
                "shape": list(np.shape(o.value)),
            }
            for o in result.outputs
        },
        "mu": {"value": _jsonable(job.mu), "unit": job.energy_unit},
        "temperature": {"value": job.temperature, "unit": job.energy_unit},
        "band_ranges": {
            "value": _jsonable(result.band_ranges),
            "unit": job.energy_unit,
            "description": "(min, max) of each band over the mesh",
        },
        "vector_components": "x, y, z; 2D pseudovectors X^z = X^xy (X^k = ½ ε_ijk X^ij)",
        "timings_s": result.timings,
        "wall_s": result.wall_s,
        "provenance": provenance(
            result,
            files={
                "npz": f"{job.prefix}.npz",
                "json": f"{job.prefix}.json",
                "plots": [Path(p).name for p in plots],
            },
        ),
        "blocks": _jsonable(result.blocks),
    }
    from ._resume import atomic_savez, atomic_write_text
    from ._validate import safe_child

    try:  # the prefix is a plain file name: nothing is written outside the output directory
        npz_path = safe_child(out, f"{job.prefix}.npz")
        json_path = safe_child(out, f"{job.prefix}.json")
    except ValueError as err:
        raise UsageError(str(err)) from None
    # Units travel inside the .npz too (a plain string array: no pickle needed to read it).
    # Both files are written to a temporary file first and renamed: never half-written.
    units = np.array(json.dumps(unit_map, ensure_ascii=False))
    atomic_savez(npz_path, arrays | {"units": units})
    atomic_write_text(json_path, json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    return npz_path, json_path


def _format_column(values: np.ndarray) -> list[str]:
    """Fixed-point when the column's magnitudes allow it, scientific otherwise (round-off → 0)."""
    v = np.where(np.abs(values) < 1e-14, 0.0, np.asarray(values, dtype=np.float64))
    big = np.max(np.abs(v)) if v.size else 0.0
    nonzero = np.abs(v[v != 0])
    if big == 0 or (big < 1e4 and nonzero.min() >= 1e-3):
        return [f"{x:+.6f}" for x in v]
    return [f"{x:+.5e}" for x in v]


_SUPERSCRIPT = str.maketrans("0123456789-", "⁰¹²³⁴⁵⁶⁷⁸⁹⁻")


def _power(unit: str, n: int) -> str:
    return unit if n == 1 else f"{unit}{str(n).translate(_SUPERSCRIPT)}"


def _print_report(result: Result, stream) -> None:
    import jax

    from . import __version__, units

    job, model = result.job, result.model
    p = lambda *a: print(*a, file=stream)
    E, L = job.energy_unit, {"angstrom": "Å"}.get(job.length_unit, job.length_unit)
    devices = result.devices or tuple(jax.devices())
    p(
        f"qgeo {__version__} — quantum geometry of Bloch bands "
        f"(jax {jax.__version__}, {devices[0].platform}, {len(devices)} device(s), "
        f"{job.precision})"
    )
    if job.precision == "float32":
        p(f"precision   warning: {FLOAT32_WARNING}")
    p(f"run         {job.source}" + (f": {job.description}" if job.description else ""))
    params = {f.name: getattr(model, f.name) for f in dataclasses.fields(model)}
    shown = "  ".join(f"{k}={_short(v)}" for k, v in params.items())
    p(f"model       {job.model_name}  {shown}")
    p(
        f"units       energies in {E}, lengths in {L} (assumed for the converted columns); "
        "ħ = e = k_B = 1 inside"
    )
    mi = result.mesh_info
    if model.is_lattice:
        p(
            f"mesh        Monkhorst–Pack {' × '.join(map(str, mi['shape']))} = "
            f"{mi['points']} k-points, shift {mi.get('shift', 0)}, "
            f"cell {float(model.cell_volume()):.6g} {_power(L, model.dim)}"
        )
    else:
        p(
            f"mesh        {mi['kind']} continuum mesh {mi['shape']} = {mi['points']} k-points, "
            f"|k| < {mi['k_max']:g} /{L}"
        )
    ranges = result.band_ranges
    if len(ranges) <= 8:
        p(
            "bands       "
            + "   ".join(f"{i}: [{lo:+.4f}, {hi:+.4f}]" for i, (lo, hi) in enumerate(ranges))
            + f" {E}"
        )
    kelvin = job.temperature / float(units.temperature_to_energy(1.0, energy=E))
    p(f"temperature {job.temperature:g} {E} ({kelvin:.4g} K)")
    blocks = result.blocks or {}
    if blocks.get("directory"):
        p(
            f"blocks      {blocks['total']} (up to {blocks['block_size']} μ values each), saved in "
            f"{blocks['directory']} as they finish; {len(blocks['loaded'])} resumed, "
            f"{len(blocks['computed'])} computed in this run"
        )
    scalars = {o.key: float(o.value) for o in result.outputs if np.ndim(o.value) == 0}
    if "chern_kubo" in scalars:
        bands = list(result.chern_bands)
        quantized = bool(scalars.get("chern_is_quantized", True))
        p("")
        p(
            f"Chern number of band(s) {bands}:  Kubo {scalars['chern_kubo']:+.6f}   "
            f"plaquette {scalars['chern_plaquette']:+.6f}"
            + ("" if quantized else "   NOT QUANTIZED on this mesh")
        )
        if "chern_min_direct_gap" in scalars:
            gap, near = (
                scalars["chern_min_direct_gap"],
                int(scalars["chern_near_degenerate_points"]),
            )
            if quantized:
                p(
                    f"{'':12}quantized: C = {round(scalars['chern_plaquette'])} (both routes "
                    f"agree; smallest direct gap on the mesh {gap:.4g} {E})"
                )
            else:
                why = (
                    f"the bands touch the others at {near} mesh point(s) (direct gap {gap:.3g} {E})"
                    if near
                    else f"the routes disagree or are not integers (smallest direct gap {gap:.3g} "
                    f"{E}): the gap closes or the mesh is too coarse for it; refine the mesh"
                )
                p(f"{'':12}not quantized: {why}")
    # A column is (header, component): an int for vectors (n_mu, 3), (i, j) for (n_mu, 3, 3).
    columns = [
        (h, np.asarray(o.value)[(slice(None), *np.atleast_1d(c))])
        for o in result.outputs
        if np.ndim(o.value) >= 2
        for h, c in o.columns
    ]
    if columns:
        p("")
        headers = [f"μ ({E})", "in gap"] + [h for h, _ in columns]
        formatted = [_format_column(v) for _, v in columns]
        widths = [
            max(10, len(h), *(len(t) for t in text))
            for h, text in zip(headers, [[""], [""]] + formatted, strict=True)
        ]
        p("  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True)))
        for i, mu in enumerate(job.mu):
            gap = "yes" if _gap_index(mu, ranges) is not None else "no"
            cells = [f"{mu:+.4f}", gap] + [text[i] for text in formatted]
            p("  ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True)))
        legend = [
            f"{o.columns[0][0] if '(' not in o.columns[0][0] else o.key}: {o.unit}"
            for o in result.outputs
            if o.columns and ("model" in o.columns[0][0] or "(" not in o.columns[0][0])
        ]
        if legend:
            p("units: " + "; ".join(legend))
    _print_streda(result, stream)
    if result.timings:
        p("")
        repeats = job.timing_repeats
        p(
            "timing"
            + (
                f" (first call = compile + run; steady state = best of {repeats} runs)"
                if repeats
                else " (first call = compile + run)"
            )
        )
        for label, t in result.timings.items():
            steady = t["steady_state_s"]
            p(
                f"  {label:<26} first call {t['first_call_s'] * 1e3:9.1f} ms"
                + (f"   steady state {steady * 1e3:9.2f} ms" if steady is not None else "")
            )
        p(f"  {'total wall time':<26} {result.wall_s:.2f} s")


def _print_streda(result: Result, stream) -> None:
    """dM^O_z/dμ between the μ values that share one gap, against C/2π (seed: dM/dμ = C e/h)."""
    out = {o.key: o.value for o in result.outputs}
    if "orbital_magnetization" not in out or "chern_kubo" not in out or result.model.dim != 2:
        return
    mu = np.asarray(result.job.mu)
    below = len(result.chern_bands)
    if tuple(result.chern_bands) != tuple(range(below)):
        return  # the Chern number is not that of the bands below a gap
    sel = np.array([_gap_index(m, result.band_ranges) == below for m in mu])
    if sel.sum() < 2:
        return
    slope = np.polyfit(mu[sel], out["orbital_magnetization"][sel, 2], 1)[0]
    c = float(out["chern_kubo"])
    print(
        f"\nStředa check (μ in the gap): dM^O_z/dμ = {slope:+.6f}   C/2π = {c / (2 * np.pi):+.6f}"
        "   (model units, e = ħ = 1: dM/dμ = C e/h)",
        file=stream,
    )


def _short(v) -> str:
    if v is None or isinstance(v, str | bool):
        return repr(v)
    arr = np.asarray(v)
    if arr.ndim == 0:
        return f"{arr.item():.6g}" if np.isrealobj(arr) else str(arr.item())
    if arr.size <= 4:
        return "[" + ",".join(f"{x:.4g}" for x in np.real_if_close(arr).ravel()) + "]"
    return f"<{'×'.join(map(str, arr.shape))} array>"


# --- command line -------------------------------------------------------------------------------

_DESCRIPTION = """\
qgeo — quantum geometry of Bloch bands and the magnetization it produces (qgeo_jax).

With no arguments, runs the default job: Haldane's model in its Chern phase
(t1 = -1, t2 = 0.15, φ = π/2, Δ = 0.2) on a 60 × 60 k-mesh at T = 0.005 and
μ = -1, -0.5, -0.25, 0, 0.25, 0.5, 1, and prints the Chern number (Kubo and
plaquette routes), the orbital magnetization M^O (model units and μ_B per cell)
and the anomalous Hall conductivity (e²/h) for each μ, a Středa check
dM^O/dμ = C e/h in the gap, and compile / steady-state timings. Converted columns
assume the model's energies are in eV and lengths in Å (change with [units] in a
config). Flags below change the default job; `qgeo run CONFIG.toml` reads a file.
"""

_EPILOG = f"""\
commands:
  qgeo                     the default job (flags below adjust it)
  qgeo run CONFIG.toml     run a config file and write OUT/PREFIX.npz and .json
                           (flags override the file)
  qgeo models              list the built-in models and their parameters
  qgeo example-config      print an annotated example config (all keys)

quantities (--quantities / quantities = [...]):
{chr(10).join(f"  {k:<26} {q.help}" for k, q in _QUANTITIES.items())}

config schema (TOML; unknown keys are an error with a "did you mean"):
  description, quantities, temperature, mu (list or {{start, stop, num}}),
  precision ("float64" | "float32"), device ("auto" | "cpu" | "gpu")
  [model]   name = any built-in model, then its parameters (see `qgeo models`)
  [mesh]    shape, shift (lattice) | shape = [n_radial, n_angle], k_max, kind (continuum)
  [units]   energy (eV, meV, J, Ry, Ha), length (angstrom, nm, bohr, m)
  [output]  dir, prefix, plots (true | false; default true)
  [options] chunk_size, g_factor, tau (ħ/energy), degen_tol, chern_bands, timing_repeats,
            block_size

outputs: PREFIX.npz holds every array (key `units` = JSON of each array's unit);
PREFIX.json holds the same values with units, descriptions, timings and provenance
(model parameters, mesh, μ, T, config, qgeo_jax/jax/numpy versions, precision, device,
files). Plots (PNG, matplotlib's Agg backend, no display; skipped with one warning if
matplotlib is missing): PREFIX_<quantity>.png for every μ-dependent quantity (the
converted unit of the table, band gaps shaded) and PREFIX_bands.png, the bands along the
high-symmetry path (continuum models: a line cut through Γ) coloured by Berry curvature
(+ PREFIX_bands_spin.png coloured by <S> when a spin quantity ran). --no-plots or
[output] plots = false writes none.

progress: a bar on stderr (step = one quantity of one block: quantity, steps done/total,
elapsed, ETA) when stderr is a terminal; --progress forces it (one plain line per step
when stderr is a file or pipe), --quiet suppresses it.

precision and device: precision = "float32" computes H(k), eigh and the geometry in
single precision (μ-weights and the k-sum stay float64): faster, relative errors
~1e-5-1e-4 on gapped models, more near degeneracies. device = "gpu" needs a CUDA build
of JAX (pip install -U "jax[cuda12]"); "cpu" forces the CPU; "auto" uses JAX's default
backend. Both are recorded in the provenance.

conventions: ħ = e = k_B = 1; electron charge −e; vectors X^k = ½ ε_ijk X^ij
(Ω^z = Ω^xy); σ_xy = −C e²/h and dM^O/dμ = C e/h in a gap; S = σ/2, M^S = −g μ_B <S>.

long runs: the Chern number and each block of options.block_size μ values are saved
in OUT/PREFIX.partial/ as soon as they finish (atomically). After Ctrl-C, SIGTERM or a
crash, `qgeo run CONFIG --resume` loads them and computes only the rest; a partial
directory of a different configuration is reported, never merged. One log line per
saved block goes to stderr.

exit codes: 0 success, 2 bad command line or config (one line), 1 computation failed,
130/143 interrupted by SIGINT/SIGTERM (rerun with --resume).
environment: QGEO_DEBUG=1 shows tracebacks; QGEO_JAX_NO_X64=1 disables float64 (not
supported by the physics entry points).
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage block
        raise UsageError(f"{message} (see `{PROG} --help`)")


def _add_job_flags(parser: argparse.ArgumentParser, suppress: bool) -> None:
    d = argparse.SUPPRESS if suppress else None
    g = parser.add_argument_group("job flags")
    g.add_argument(
        "--model",
        metavar="NAME",
        default=d,
        help=f"built-in model: {', '.join(_model_table())} (see `qgeo models`)",
    )
    g.add_argument(
        "--param",
        metavar="KEY=VALUE",
        action="append",
        default=d,
        help='model parameter, repeatable; VALUE is a TOML value: 0.3, [0, 0, 0.2], "x"',
    )
    g.add_argument(
        "--mesh",
        metavar="N1xN2",
        default=d,
        help="k-mesh points per axis, e.g. 60x60 or 60 (continuum: n_radial x n_angle)",
    )
    g.add_argument(
        "--mu",
        metavar="LIST",
        default=d,
        help="chemical potentials: '-1,0,1' or 'start:stop:num' (energy units)",
    )
    g.add_argument(
        "--temperature",
        metavar="T",
        default=d,
        help="temperature in energy units (k_B = 1), or with a K suffix: 300K",
    )
    g.add_argument(
        "--quantities", metavar="Q1,Q2", default=d, help="comma-separated names from the list below"
    )
    g.add_argument(
        "--out",
        metavar="DIR",
        default=d,
        help="write PREFIX.npz, PREFIX.json and PNG plots to DIR (default job: nothing written)",
    )
    g.add_argument(
        "--prefix", metavar="NAME", default=d, help="output file stem (default qgeo_results)"
    )
    g.add_argument(
        "--tau",
        metavar="TAU",
        type=float,
        default=d,
        help="relaxation time for kinetic_*_extrinsic (units ħ/energy: ħ/eV = 0.658 fs)",
    )
    g.add_argument(
        "--chunk-size", metavar="N", type=int, default=d, help="k-points per vectorised chunk"
    )
    g.add_argument(
        "--repeats",
        metavar="N",
        type=int,
        default=d,
        help="steady-state timing repeats (default job 3, run 0)",
    )
    g.add_argument(
        "--quiet",
        action="store_true",
        default=argparse.SUPPRESS if suppress else False,
        help="print nothing but errors, warnings and the written paths",
    )
    g.add_argument(
        "--no-plots",
        action="store_true",
        default=argparse.SUPPRESS if suppress else False,
        help="write no PNG plots next to the .npz/.json (default: plots, if matplotlib is there)",
    )
    g.add_argument(
        "--progress",
        action="store_true",
        default=argparse.SUPPRESS if suppress else False,
        help="show the progress bar even when stderr is not a terminal (and with --quiet)",
    )
    g.add_argument(
        "--precision",
        metavar="P",
        default=d,
        help="float64 (default) or float32 (single-precision linear algebra; see below)",
    )
    g.add_argument(
        "--device",
        metavar="D",
        default=d,
        help="auto (default: JAX's default backend), cpu or gpu (needs jax[cuda12])",
    )
    g.add_argument(
        "--cores",
        metavar="N",
        type=int,
        default=argparse.SUPPRESS if suppress else 0,
        help="CPU devices in this process (default: every core it may use; 1 = one device)",
    )
    g.add_argument(
        "--workers",
        metavar="N",
        type=int,
        default=argparse.SUPPRESS if suppress else 1,
        help="split the k-mesh over N processes joined by jax.distributed (one core each; "
        "worth it for runs longer than ~10 s; not with --resume)",
    )
    g.add_argument(
        "--block-size",
        metavar="N",
        type=int,
        default=d,
        help=f"μ values per block (default {DEFAULT_BLOCK_SIZE}); with an output directory each "
        "finished block is saved at once in OUT/PREFIX.partial/",
    )
    g.add_argument(
        "--resume",
        action="store_true",
        default=argparse.SUPPRESS if suppress else False,
        help="continue an interrupted run: load its finished blocks, compute only the others "
        "(refused if the configuration changed)",
    )


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = _Parser(prog=PROG, description=_DESCRIPTION, epilog=_EPILOG, formatter_class=fmt)
    from . import __version__

    parser.add_argument("--version", action="version", version=f"qgeo_jax {__version__}")
    _add_job_flags(parser, suppress=False)
    sub = parser.add_subparsers(
        dest="command", metavar="{run,models,example-config}", parser_class=_Parser
    )
    run = sub.add_parser(
        "run",
        help="run a TOML config",
        formatter_class=fmt,
        description="Run a TOML config file (see `qgeo example-config`); flags override it.",
    )
    run.add_argument("config", help="path to a TOML config file")
    _add_job_flags(run, suppress=True)
    sub.add_parser("models", help="list built-in models and parameters")
    sub.add_parser("example-config", help="print an annotated example config")
    return parser


# Flags whose value may start with '-' (negative numbers): argparse would read '-1,0,1' as a flag.
_VALUE_FLAGS = {"--mu", "--temperature", "--param", "--mesh"}


def _join_negative_values(argv: list[str]) -> list[str]:
    out, i = [], 0
    while i < len(argv):
        if argv[i] in _VALUE_FLAGS and i + 1 < len(argv) and re.match(r"-[\d.]", argv[i + 1]):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def _parse_param(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise UsageError(f"--param expects KEY=VALUE, got {text!r}")
    try:
        parsed = tomllib.loads(f"v = {value.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value.strip()
    return key.strip(), parsed


def _apply_flags(job: Job, args: argparse.Namespace) -> Job:
    if getattr(args, "model", None):
        name = _resolve_model(args.model)[0]
        if name != job.model_name:
            job.model_params = {}
        job.model_name = name
    for text in getattr(args, "param", None) or []:
        key, value = _parse_param(text)
        job.model_params[key] = value
    if getattr(args, "mesh", None):
        job.mesh = {k: v for k, v in job.mesh.items() if k != "shape"} | {
            "shape": _parse_shape(args.mesh)
        }
    if getattr(args, "mu", None) is not None:
        job.mu = _parse_mu(args.mu)
    if getattr(args, "temperature", None) is not None:
        job.temperature_input = args.temperature
        job.temperature = _parse_temperature(args.temperature, job.energy_unit)
    if getattr(args, "quantities", None):
        job.quantities = _parse_quantities(args.quantities)
        job.quantities_given = True
    if getattr(args, "out", None):
        job.out_dir = args.out
    if getattr(args, "prefix", None) is not None:
        job.prefix = _check_prefix(args.prefix)
    if getattr(args, "block_size", None) is not None:
        job.block_size = _check_block_size(args.block_size)
    if getattr(args, "resume", False):
        job.resume = True
    if getattr(args, "no_plots", False):
        job.plots = False
    if getattr(args, "progress", False):
        job.progress = "on"
    if getattr(args, "precision", None) is not None:
        job.precision = _parse_choice(args.precision, PRECISIONS, "precision")
    if getattr(args, "device", None) is not None:
        job.device = _parse_choice(args.device, DEVICES, "device")
    if getattr(args, "tau", None) is not None:
        job.tau = args.tau
    if getattr(args, "chunk_size", None) is not None:
        job.chunk_size = args.chunk_size
    if getattr(args, "repeats", None) is not None:
        if args.repeats < 0:
            raise UsageError("--repeats must be >= 0")
        job.timing_repeats = args.repeats
    return job


def _print_models(stream) -> None:
    table = _model_table()
    width = max(map(len, table)) + 2
    for name, maker in table.items():
        doc = ((maker.__doc__ or "").strip().splitlines() or [""])[0]
        print(f"{name:<{width}}{doc}", file=stream)
        named, open_ended = _model_parameters(maker)
        params = [
            k if v is inspect.Parameter.empty else f"{k}={_short(v)}" for k, v in named.items()
        ]
        params += ["... (named overrides, see its docstring)"] if open_ended else []
        print(f"{'':<{width}}parameters: {', '.join(params)}", file=stream)
    aliases = ", ".join(f"{k} = {v}" for k, v in _MODEL_ALIASES.items())
    print(f"\nnames are case-insensitive; aliases: {aliases}", file=stream)


def _logger(quiet: bool, progress: _Progress | None = None) -> Callable[[str], None]:
    """One line per message on stderr (above the progress bar, if one is shown); with --quiet
    only warnings."""

    def log(text: str) -> None:
        if not quiet or text.startswith("warning:"):
            if progress is not None:
                progress.write(f"{PROG}: {text}")
            else:
                print(f"{PROG}: {text}", file=sys.stderr, flush=True)

    return log


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``qgeo`` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        try:
            args = build_parser().parse_args(_join_negative_values(argv))
        except SystemExit as stop:  # --help / --version
            return int(stop.code or 0)
        if args.command == "models":
            _print_models(sys.stdout)
            return 0
        if args.command == "example-config":
            sys.stdout.write(EXAMPLE_CONFIG)
            return 0
        if args.command == "run":
            job = job_from_config(load_config(args.config), source=f"config {args.config}")
        else:
            job = Job()
        job = _apply_flags(job, args)
        if job.resume and job.out_dir is None:
            raise UsageError("--resume needs an output directory (--out DIR or [output] dir)")
        quiet = getattr(args, "quiet", False)
        workers = getattr(args, "workers", 1)
        if workers < 1:
            raise UsageError(f"--workers must be >= 1, got {workers}")
        if workers > 1 and "QGEO_COORDINATOR" not in os.environ:
            if job.resume:
                raise UsageError("--resume runs in one process; drop --workers to resume")
            from .parallel import launch

            # The same command in N processes, each reducing its share of the mesh.
            return launch(["-m", "qgeo_jax.cli", *argv], workers)
        cores = getattr(args, "cores", 0)
        if cores < 0:
            raise UsageError(f"--cores must be >= 1 (0: every available core), got {cores}")
        if "QGEO_COORDINATOR" not in os.environ and job.device in ("auto", "cpu"):
            from .parallel import use_cpu_cores

            # One JAX CPU device per core: the k reduction is dealt out over them (same result to
            # round-off; 1.9-2.0x on 2 cores). Not when the caller already chose (XLA_FLAGS).
            if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
                try:
                    use_cpu_cores(cores or None)
                except RuntimeError:  # JAX already started (qgeo called from Python): keep it
                    pass
        if "QGEO_COORDINATOR" in os.environ:
            from .parallel import initialize, is_main_process

            initialize()  # before any JAX computation
            if not is_main_process():  # every process computes; only process 0 reports and writes
                quiet, job.out_dir, job.plots = True, None, False
        from ._resume import terminate_as_interrupt

        progress = _make_progress(job, quiet)
        log = _logger(quiet, progress)
        plotting = job.plots and job.out_dir is not None
        try:
            with terminate_as_interrupt():  # SIGTERM unwinds like Ctrl-C: blocks are kept
                result = run_job(job, log=log, progress=progress)
                plots = []
                if plotting:
                    if progress is not None:
                        progress.add_steps(1)
                        progress.begin("plots")
                    plots = _write_plots(result, log)
                    if progress is not None:
                        progress.step_done()
                if progress is not None:
                    progress.close()
                if not quiet:
                    _print_report(result, sys.stdout)
                if job.out_dir is not None:
                    paths = [*_write_outputs(result, plots), *plots]
                    print(
                        ("" if quiet else "\n") + "wrote " + "  ".join(map(str, paths)),
                        file=sys.stdout,
                    )
                    if result.store is not None:
                        result.store.finish()  # the blocks are in the final files now
        finally:
            if progress is not None:
                progress.close()
        return 0
    except UsageError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    except Interrupted as stop:
        print(f"{PROG}: {stop}", file=sys.stderr)
        return stop.exit_code
    except BrokenPipeError:  # `qgeo | head`: the reader left; stop quietly like other CLI tools
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 141
    except KeyboardInterrupt as stop:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return getattr(stop, "exit_code", 130)
    except Exception as err:  # one line unless debugging
        if os.environ.get("QGEO_DEBUG", "0") not in ("", "0"):
            raise
        print(
            f"{PROG}: error: {type(err).__name__}: {_first_line(err)} "
            "(QGEO_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
