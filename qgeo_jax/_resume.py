r"""Resumable block-wise runs: every finished block is on disk, whole, before the next one starts.

A long run (a μ list, a parameter sweep, a large mesh) is cut into *blocks* with string keys. A
:class:`BlockStore` keeps one file per finished block in a *partial directory*::

    DIR/manifest.json        format, config hash, the canonical config, the block keys
    DIR/block-<key>.npz      arrays of one block + __meta__ (JSON), __key__, __config_hash__,
                             __digest__ (SHA-256 of the arrays)

Every file is written to a temporary file in the same directory, flushed, ``fsync``-ed and moved
into place with ``os.replace`` (atomic on one file system), so a crash, SIGINT or SIGTERM leaves
either the old state or the new block, never half a file. Re-running with ``resume=True`` loads
the finished blocks and computes only the others; as each block is a deterministic function of the
configuration, the result is identical (bit for bit, on the same machine and software) to an
uninterrupted run.

What is never merged: a partial directory written for a different configuration (the SHA-256 of
the canonical JSON of the configuration differs — the error lists the keys that differ), a block
file whose key, hash or digest does not match, a truncated or corrupted file, or one holding
pickled objects. Files are read with ``np.load(..., allow_pickle=False)`` and ``json``: nothing
read from disk is ever executed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import signal
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._validate import safe_output_name

FORMAT = "qgeo_jax partial results v1"
MANIFEST = "manifest.json"
_PREFIX, _SUFFIX = "block-", ".npz"


class PartialResultsError(ValueError):
    """A partial directory or block file that must not be merged (other config, corrupted)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM turned into an exception (see :func:`terminate_as_interrupt`)."""

    exit_code = 128 + signal.SIGTERM


# --- canonical configuration and hashing ----------------------------------------------------------
def plain(obj):
    """JSON-ready copy: numpy → Python, tuples → lists, non-finite floats → strings."""
    if isinstance(obj, Mapping):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        if np.iscomplexobj(obj):
            return {"real": plain(obj.real), "imag": plain(obj.imag)}
        return plain(obj.tolist())
    if isinstance(obj, np.generic):
        return plain(obj.item())
    if isinstance(obj, complex):
        return {"real": plain(obj.real), "imag": plain(obj.imag)}
    if isinstance(obj, float) and not math.isfinite(obj):
        return repr(obj)
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    return repr(obj)


def canonical_json(config) -> str:
    """Sorted keys, no whitespace: equal configurations give equal text (floats by repr: exact)."""
    return json.dumps(plain(config), sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def config_hash(config) -> str:
    """SHA-256 of :func:`canonical_json`."""
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()


def differences(old, new, prefix: str = "") -> list[str]:
    """Dotted paths of the entries in which two JSON-like configurations differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            path = f"{prefix}{key}"
            if key not in old or key not in new:
                out.append(path)
            else:
                out.extend(differences(old[key], new[key], path + "."))
        return out
    return [] if old == new else [prefix.rstrip(".") or "(root)"]


# --- atomic writes -------------------------------------------------------------------------------
def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not supported on every platform / file system
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give; mkstemp's own 0600 would surprise users


def atomic_write(path, write: Callable[[Any], None]) -> Path:
    """Write ``path`` through ``write(binary_file)`` into a temporary file, then ``os.replace``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with contextlib.suppress(OSError):
            os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path, text: str) -> Path:
    return atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


def atomic_savez(path, arrays: Mapping[str, np.ndarray]) -> Path:
    """``np.savez`` to ``path`` atomically (exactly this name: no '.npz' is appended)."""
    for name, value in arrays.items():
        if np.asarray(value).dtype.hasobject:
            raise TypeError(
                f"array {name!r} has dtype object; only numeric/str arrays are written."
            )
    return atomic_write(path, lambda fh: np.savez(fh, **arrays))


def array_digest(arrays: Mapping[str, np.ndarray]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes of the arrays (order-independent)."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def load_npz(path) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file, never unpickling; errors as :class:`PartialResultsError`."""
    try:
        # Our own file handle: numpy leaks its own when the zip directory is unreadable.
        with open(path, "rb") as fh:
            data = np.load(fh, allow_pickle=False)
            if not isinstance(data, np.lib.npyio.NpzFile):
                raise ValueError("not an .npz archive")
            with data:
                return {name: data[name] for name in data.files}
    except (
        ValueError,
        OSError,
        EOFError,
        KeyError,
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
    ) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        if "allow_pickle" in reason or "Object arrays" in reason:
            reason = "it holds pickled Python objects, which are never loaded"
        raise PartialResultsError(f"{path}: unreadable or corrupted ({reason})") from None


# --- the store -----------------------------------------------------------------------------------
def _check_key(key: str) -> str:
    return safe_output_name(key, what="block key")


class BlockStore:
    """Finished blocks of one run in ``directory`` (see the module docstring).

    ``config`` is any JSON-like description of everything that determines the results (model,
    mesh, μ, T, options, software versions); ``keys`` the block keys in order. With
    ``resume=False`` an old partial directory is cleared (its files only); with ``resume=True`` it
    must have been written for the same configuration and keys, else :class:`PartialResultsError`.
    ``log`` receives one-line notices.
    """

    def __init__(
        self,
        directory,
        config,
        keys: Sequence[str],
        *,
        resume: bool,
        log: Callable[[str], None] | None = None,
    ):
        self.directory = Path(directory)
        self.keys = [_check_key(k) for k in keys]
        if len(set(self.keys)) != len(self.keys):
            raise ValueError(f"block keys must be unique, got {self.keys}")
        self.config = plain({"config": config, "blocks": self.keys})
        self.hash = config_hash(self.config)
        self.log = log or (lambda _text: None)
        self.resumed = False
        if self.directory.exists() and not self.directory.is_dir():
            raise PartialResultsError(f"{self.directory} exists and is not a directory.")
        manifest = self.directory / MANIFEST
        if resume and manifest.exists():
            self._check_manifest(manifest)
            self.resumed = True
            self._remove(self.directory.glob(".*.tmp"))  # half-written files of the interrupted run
        else:
            if resume:
                self.log(f"nothing to resume in {self.directory}: starting from the first block")
            elif manifest.exists() or any(self.directory.glob(f"{_PREFIX}*{_SUFFIX}")):
                self.log(
                    f"discarding the partial results in {self.directory} "
                    "(run with --resume to continue them instead)"
                )
            self.clear()
            self.directory.mkdir(parents=True, exist_ok=True)
            doc = {"format": FORMAT, "config_hash": self.hash} | self.config
            atomic_write_text(manifest, json.dumps(doc, indent=1, sort_keys=True) + "\n")

    # -- manifest --
    def _check_manifest(self, manifest: Path) -> None:
        fix = f"delete {self.directory} (or run without --resume) to start over"
        try:
            doc = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise PartialResultsError(
                f"{manifest}: corrupted ({_first_line(err)}); {fix}."
            ) from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise PartialResultsError(f"{manifest}: not a {FORMAT!r} manifest; {fix}.")
        if doc.get("config_hash") != self.hash:
            old = {k: doc.get(k) for k in ("config", "blocks")}
            changed = differences(old, self.config) or ["(hash only: the manifest was edited)"]
            shown = ", ".join(changed[:8]) + (" ..." if len(changed) > 8 else "")
            raise PartialResultsError(
                f"the partial results in {self.directory} were computed with a different "
                f"configuration (differs in: {shown}); they are not merged. Restore the old "
                f"configuration to resume, or {fix}."
            )

    # -- blocks --
    def path(self, key: str) -> Path:
        return self.directory / f"{_PREFIX}{_check_key(key)}{_SUFFIX}"

    def has(self, key: str) -> bool:
        return self.path(key).is_file()

    def save(self, key: str, arrays: Mapping[str, np.ndarray], meta: Mapping) -> Path:
        arrays = {name: np.asarray(v) for name, v in arrays.items()}
        if any(name.startswith("__") for name in arrays):
            raise ValueError("array names starting with '__' are reserved")
        extra = {
            "__meta__": np.array(json.dumps(plain(meta), sort_keys=True)),
            "__key__": np.array(key),
            "__config_hash__": np.array(self.hash),
            "__digest__": np.array(array_digest(arrays)),
        }
        return atomic_savez(self.path(key), arrays | extra)

    def load(self, key: str) -> tuple[dict[str, np.ndarray], dict]:
        path = self.path(key)
        fix = f"delete {path} to recompute that block (or run without --resume to start over)"
        try:
            data = load_npz(path)
        except PartialResultsError as err:
            raise PartialResultsError(f"{err}; {fix}.") from None
        try:
            stored_key, stored_hash = str(data.pop("__key__")), str(data.pop("__config_hash__"))
            digest, meta = str(data.pop("__digest__")), json.loads(str(data.pop("__meta__")))
        except (KeyError, json.JSONDecodeError):
            raise PartialResultsError(f"{path}: not a qgeo_jax block file; {fix}.") from None
        if stored_key != key or stored_hash != self.hash:
            owner = f"block {stored_key!r}" if stored_key != key else "another configuration"
            raise PartialResultsError(
                f"{path}: belongs to {owner}, not to block {key!r} of this run; it is not merged; "
                f"{fix}."
            )
        if array_digest(data) != digest:
            raise PartialResultsError(f"{path}: contents do not match their checksum; {fix}.")
        return data, meta

    # -- cleanup --
    def _remove(self, paths: Iterable[Path]) -> None:
        for p in paths:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()

    def clear(self) -> None:
        """Delete this store's files (manifest, blocks, temporary files); keep anything else."""
        if not self.directory.is_dir():
            return
        d = self.directory
        self._remove([d / MANIFEST, *d.glob(f"{_PREFIX}*{_SUFFIX}"), *d.glob(".*.tmp")])

    def finish(self) -> None:
        """The run is complete and its results written elsewhere: remove the partial directory."""
        self.clear()
        with contextlib.suppress(OSError):  # not empty: the user keeps other files there
            self.directory.rmdir()


def run_blocks(
    blocks: Sequence[tuple[str, Callable[[], tuple[Mapping[str, np.ndarray], Mapping]]]],
    store: BlockStore | None = None,
    *,
    progress: Callable[[str], None] | None = None,
    labels: Mapping[str, str] | None = None,
    state: dict | None = None,
) -> dict[str, tuple[dict[str, np.ndarray], dict]]:
    """Run ``blocks`` = [(key, compute)] in order; ``compute() -> (arrays, meta)``.

    With a store, finished blocks are loaded instead of computed and every computed block is saved
    before the next starts. ``progress`` gets one line per block; ``state`` (a dict, updated in
    place so that it is current when the loop is interrupted) gets ``loaded``, ``computed`` and
    ``total``.
    """
    state = {} if state is None else state
    state.update(total=len(blocks), loaded=[], computed=[])
    out = {}
    for i, (key, compute) in enumerate(blocks, start=1):
        label = (labels or {}).get(key, key)
        t0 = time.perf_counter()
        if store is not None and store.has(key):
            out[key] = store.load(key)
            state["loaded"].append(key)
            what = f"loaded from {store.path(key)}"
        else:
            arrays, meta = compute()
            arrays = {name: np.asarray(v) for name, v in arrays.items()}
            if store is not None:
                store.save(key, arrays, meta)
            out[key] = (arrays, dict(meta))
            state["computed"].append(key)
            what = f"computed in {time.perf_counter() - t0:.2f} s" + (
                f", saved to {store.path(key)}" if store is not None else ""
            )
        if progress is not None:
            progress(f"block {i}/{len(blocks)} [{label}] {what}")
    return out


@contextlib.contextmanager
def terminate_as_interrupt():
    """Within the block, SIGTERM raises :class:`Terminated` (a ``KeyboardInterrupt``) in the main
    thread, so a terminated run unwinds like Ctrl-C: finished blocks are already on disk, the
    half-written temporary file is removed, and the caller can say how to resume."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Terminated(f"terminated by signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__
