"""Small shared helpers: seeding, argument checks, atomic writes, row ranges, sparse conversion,
logging, quiet calls; the contract's modality names and its error type (shared by ``data`` and
``readers``, which must not import each other both ways)."""

from __future__ import annotations

import contextlib
import io
import logging
import numbers
import os
import random
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import scipy.sparse as sp

logger = logging.getLogger("mmae_utils")
if not logger.handlers:
    _handler = logging.StreamHandler()
    _handler.setFormatter(logging.Formatter("%(levelname)s mmae_utils: %(message)s"))
    logger.addHandler(_handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False

#: Set (to anything) to get plain text progress bars instead of notebook widgets: the
#: report runner does, because a widget saved in an executed notebook shows 0 % forever.
TEXT_PROGRESS_ENV = "MMAE_TEXT_PROGRESS"

#: The two values of ``var["feature_types"]`` in the dataset contract.
GEX, ATAC = "GEX", "ATAC"


class MultiomeError(ValueError):
    """The data do not follow the multiome contract; the message says what and how to fix it.

    Public as :class:`mmae_utils.data.MultiomeError`.
    """


@contextlib.contextmanager
def quiet() -> Iterator[io.StringIO]:
    """Silence scib's prints and the FutureWarnings / view warnings of scanpy and pandas.

    Yields the buffer that collects what was printed (e.g. to look for a message in it).
    """
    import anndata as ad

    buf = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(buf):
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", ad.ImplicitModificationWarning)
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        yield buf


def set_seed(seed: int, *, deterministic: bool = True) -> None:
    """Seed Python, NumPy, Keras and TensorFlow in one call.

    Parameters
    ----------
    seed
        The seed. The same seed gives the same data, model initialisation, batch order
        and therefore the same embedding.
    deterministic
        Also ask TensorFlow for deterministic kernels
        (``tf.config.experimental.enable_op_determinism``). On CPU this costs little.
    """
    seed = int(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - scanpy/umap fall back to the global state
    try:
        import keras

        keras.utils.set_random_seed(seed)
    except ImportError:  # pragma: no cover - keras is a hard dependency
        pass
    if deterministic:
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


def check_learning_rate(value) -> float:
    """``value`` as a float if it is a valid learning rate (a real number > 0).

    Raises ``TypeError`` for anything but a real number (``bool`` included) and
    ``ValueError`` for one that is not > 0 (NaN included).
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"learning_rate must be a positive number, got {value!r}.")
    if not value > 0:
        raise ValueError(f"learning_rate must be > 0, got {value}.")
    return float(value)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only on success.

    Nothing half-written is ever left at ``path``: on an exception the temporary file is
    removed and the previous content of ``path`` (if any) is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix if suffix is None else suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    tmp_path.unlink()  # let the writer create it (some writers refuse an existing file)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def to_csr(x) -> sp.csr_matrix:
    """Return ``x`` as a ``scipy.sparse.csr_matrix`` (accepts csr/csc arrays or matrices, dense)."""
    if isinstance(x, sp.csr_matrix):
        return x
    if sp.issparse(x):
        return sp.csr_matrix(x.tocsr())
    return sp.csr_matrix(np.asarray(x))


def row_ranges(n: int, size: int) -> Iterator[tuple[int, int]]:
    """Row ranges ``(start, stop)`` covering ``range(n)`` in steps of ``size``.

    The common way to walk ``n`` rows a chunk at a time (bounded memory): the last range is
    shorter when ``size`` does not divide ``n``, and ``n = 0`` gives none.

    Raises
    ------
    ValueError
        If ``size`` is smaller than 1 (checked at the call, not at the first step).
    """
    if size < 1:
        raise ValueError(f"size must be at least 1, got {size}.")
    return ((start, min(start + size, n)) for start in range(0, n, size))


def row_blocks(x: sp.csr_matrix, max_nnz: int = 1 << 22) -> Iterator[tuple[int, int]]:
    """Row ranges ``(start, stop)`` of a CSR matrix holding about ``max_nnz`` stored values each.

    Used to transform ``x.data`` in place in pieces, so that no temporary as large as the
    whole matrix exists (a row longer than ``max_nnz`` makes a block of its own).
    """
    indptr = x.indptr
    n = x.shape[0]
    start = 0
    while start < n:
        stop = int(np.searchsorted(indptr, indptr[start] + max_nnz, side="right")) - 1
        stop = min(max(stop, start + 1), n)
        yield start, stop
        start = stop


def scale_rows_inplace(x: sp.csr_matrix, scale: np.ndarray) -> None:
    """``x[i, :] *= scale[i]`` on ``x.data`` in place, block by block (no nnz-sized temporary)."""
    indptr = x.indptr
    for start, stop in row_blocks(x):
        lo, hi = indptr[start], indptr[stop]
        x.data[lo:hi] *= np.repeat(scale[start:stop], np.diff(indptr[start : stop + 1])).astype(
            x.data.dtype, copy=False
        )


def column_sums(x: sp.csr_matrix, *, squares: bool = False) -> np.ndarray:
    """Float64 column sums (or sums of squares) of a CSR matrix, block by block."""
    out = np.zeros(x.shape[1], dtype=np.float64)
    for start, stop in row_blocks(x):
        lo, hi = x.indptr[start], x.indptr[stop]
        values = x.data[lo:hi].astype(np.float64)
        if squares:
            values *= values
        out += np.bincount(x.indices[lo:hi], weights=values, minlength=x.shape[1])
    return out


def content_hash(x) -> str:
    """Short hash of a matrix's content (CSR or dense), to reuse what was computed from it."""
    import hashlib

    h = hashlib.blake2b(digest_size=16)
    h.update(str((type(x).__name__, x.shape, x.dtype.str)).encode())
    parts = (x.indptr, x.indices, x.data) if sp.issparse(x) else (x,)
    for part in parts:
        part = np.ascontiguousarray(part)
        h.update(part.view(np.uint8).reshape(-1) if part.size else b"")
    return h.hexdigest()


class ContentCache:
    """Results by a key of what they were computed from, the ``size`` most recently used
    kept: for exact, deterministic work that a report repeats on the same data."""

    def __init__(self, size: int):
        from collections import OrderedDict

        self.size = size
        self._items = OrderedDict()

    def get(self, key, compute):
        """The result stored under ``key``, or ``compute()``'s, stored."""
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        value = self._items[key] = compute()
        while len(self._items) > self.size:
            self._items.popitem(last=False)
        return value


def available_cpus() -> int:
    """CPUs this process may run on (its affinity where the OS reports one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far, in bytes (Linux ``ru_maxrss``)."""
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def progress_bar(**kwargs):
    """A tqdm bar: the notebook widget of ``tqdm.auto`` in an interactive session, a text
    bar on stdout updated at most every 10 s when :data:`TEXT_PROGRESS_ENV` is set.

    ``kwargs`` go to tqdm (``total``, ``desc``, ``unit``, ``disable``, ...).
    """
    if os.environ.get(TEXT_PROGRESS_ENV):
        import sys

        from tqdm.std import tqdm

        options = {"file": sys.stdout, "ascii": True, "mininterval": 10.0, "ncols": 80}
        return tqdm(**{**options, **kwargs})
    from tqdm.auto import tqdm

    return tqdm(**kwargs)


def import_tensorflow_quietly():
    """Import TensorFlow and Keras with their C++ start-up lines discarded, and return
    the GPUs TensorFlow sees.

    TensorFlow's native code writes oneDNN, CPU-feature and CUDA-probing lines (on a
    machine without a GPU driver, a "failed call to cuInit" error that is no failure)
    straight to file descriptor 2, before ``TF_CPP_MIN_LOG_LEVEL`` is read, where no
    Python filter reaches them; the descriptor is pointed at ``/dev/null`` while
    TensorFlow loads and probes its devices. Later imports are no-ops.
    """
    import sys

    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import keras  # noqa: F401 - loaded here, quietly, for later imports
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        tf.constant(0.0).numpy()  # the first op starts the runtime, which logs too
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    return gpus
