"""Model inputs read from a backed file a chunk of cells at a time (data beyond memory).

An AnnData read with ``data.load_multiome(path, backed=True)`` keeps its counts on disk.
Restricted to the selected features (``gex[:, gex.var["highly_variable"]]``), it can be
passed to :func:`mmae_utils.training.train`, :func:`~mmae_utils.training.embed` and
:func:`~mmae_utils.training.reconstruct` like an in-memory one: they then read it through
a :class:`DiskRows`, which behaves like a cells x features array whose rows are read,
normalised and densified on demand, and never hold all counts:

- cells are read in contiguous chunks of :data:`CHUNK_ROWS` rows (one read of the file
  for both modalities), kept in a small cache of recently used chunks;
- training visits the cells in a *windowed shuffle* (:func:`window_order`): each epoch
  permutes the chunks, takes them :data:`WINDOW_CHUNKS` at a time and permutes the cells
  of each such window, so a batch mixes cells from 16 places in the file (the real file
  is sorted by batch) while only a few windows of chunks are ever in memory;
- input transforms are fitted on at most :data:`FIT_CELLS` cells from chunks drawn at
  random (seed 0; all cells of a smaller file, as in memory), and SVD components are
  then computed for every cell in one pass and kept (cells x components, small), which
  training and the block scale then read instead of the file;
- the NB library sizes are summed in one pass.

``benchmarks/bench_streaming.py`` trains on a million simulated cells this way.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict

import anndata as ad
import numpy as np
import scipy.sparse as sp

from ._utils import logger, row_ranges, to_csr
from .data import backed_columns, is_backed, open_counts
from .pp import binarize, is_integer_valued, log_normalize

__all__ = [
    "CHUNK_ROWS",
    "FIT_CELLS",
    "KINDS",
    "WINDOW_CHUNKS",
    "DiskRows",
    "disk_rows",
    "fit_sample",
    "is_streamed",
    "window_order",
]

#: Cells per contiguous read of the file.
CHUNK_ROWS = 1024
#: Chunks whose cells are shuffled together during training (16,384 cells).
WINDOW_CHUNKS = 16
#: Most cells the input transforms (SVD components, TF-IDF, z-scores) are fitted on.
FIT_CELLS = 50_000
#: What a :class:`DiskRows` yields: log-normalised GEX, binarised ATAC, or raw counts.
KINDS = ("log", "binary", "counts")


class _ChunkReader:
    """One open backed file, read a chunk of rows at a time for every registered view."""

    def __init__(self, adata: ad.AnnData, chunk_rows: int):
        self.handle, self.matrix = open_counts(adata)
        self.chunk_rows = int(chunk_rows)
        self.n_obs = int(self.matrix.shape[0])
        self.views: list[tuple[np.ndarray, str] | None] = []  # (file columns, kind)
        self.cache: OrderedDict[int, list] = OrderedDict()
        self.capacity = 2 * WINDOW_CHUNKS + 2
        self.lock = threading.Lock()

    def register(self, cols: np.ndarray, kind: str) -> int:
        with self.lock:
            self.views.append((cols, kind))
            self.cache.clear()  # cached chunks lack the new view
            return len(self.views) - 1

    def unregister(self, view: int) -> None:
        """Stop deriving ``view`` (its :class:`DiskRows` is gone)."""
        with self.lock:
            self.views[view] = None
            self.cache.clear()

    def chunk(self, c: int, view: int) -> sp.csr_matrix:
        """View ``view`` of chunk ``c`` (rows ``c * chunk_rows`` on), read if not cached."""
        with self.lock:
            if c in self.cache:
                self.cache.move_to_end(c)
                return self.cache[c][view]
            start = c * self.chunk_rows
            block = to_csr(self.matrix[start : min(start + self.chunk_rows, self.n_obs)])
            self.cache[c] = [v and _derive(block[:, v[0]], v[1]) for v in self.views]
            while len(self.cache) > self.capacity:
                self.cache.popitem(last=False)
            return self.cache[c][view]


def _derive(counts: sp.csr_matrix, kind: str) -> sp.csr_matrix:
    if kind == "log":
        return log_normalize(counts, copy=False)
    if kind == "binary":
        return binarize(counts, copy=False)
    return counts.astype(np.float32, copy=False)


_READERS: weakref.WeakValueDictionary = weakref.WeakValueDictionary()


def _reader(adata: ad.AnnData) -> _ChunkReader:
    """The reader of ``adata``'s file, shared by the views of one call (one read per chunk)."""
    info = adata.uns["mmae_backed"]
    key = (info["path"], info["counts"])
    reader = _READERS.get(key)
    if reader is None:
        reader = _ChunkReader(adata, CHUNK_ROWS)
        weakref.finalize(reader, reader.handle.close)
        _READERS[key] = reader
    return reader


class DiskRows:
    """A cells x features matrix on disk, indexed by rows like a NumPy array.

    ``x[rows]`` (an index array or a slice) returns those rows dense, float32, in the
    order asked; :meth:`csr` returns them sparse. Made by :func:`disk_rows`.
    """

    def __init__(self, reader: _ChunkReader, cols: np.ndarray, kind: str):
        self.reader, self.kind = reader, kind
        self.view = reader.register(np.asarray(cols), kind)
        weakref.finalize(self, reader.unregister, self.view)
        self.shape = (reader.n_obs, len(cols))
        self.dtype = np.dtype(np.float32)
        self.ndim = 2

    def _groups(self, rows: np.ndarray):
        chunks = rows // self.reader.chunk_rows
        for c in np.unique(chunks):
            where = np.flatnonzero(chunks == c)
            local = rows[where] - c * self.reader.chunk_rows
            yield where, self.reader.chunk(int(c), self.view)[local]

    def _rows(self, rows) -> np.ndarray:
        if isinstance(rows, slice):
            return np.arange(*rows.indices(self.shape[0]))
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= self.shape[0]):
            raise IndexError(f"rows out of range for {self.shape[0]} cells.")
        return rows

    def __getitem__(self, rows) -> np.ndarray:
        rows = self._rows(rows)
        out = np.empty((len(rows), self.shape[1]), dtype=np.float32)
        for where, part in self._groups(rows):
            out[where] = part.toarray()
        return out

    def csr(self, rows) -> sp.csr_matrix:
        """Rows ``rows`` (sorted or not) as a CSR float32 matrix, in the order asked."""
        rows = self._rows(rows)
        parts, order = [], []
        for where, part in self._groups(rows):
            parts.append(part)
            order.append(where)
        if not parts:
            return sp.csr_matrix((0, self.shape[1]), dtype=np.float32)
        stacked = sp.vstack(parts, format="csr")
        return stacked[np.argsort(np.concatenate(order))]

    def sum(self, axis: int) -> np.ndarray:
        """Row sums (``axis=1``, one pass over the file) as a column, like SciPy's."""
        if axis != 1:
            raise ValueError("DiskRows sums rows only (axis=1).")
        out = np.empty(self.shape[0], dtype=np.float64)
        for start, stop in row_ranges(self.shape[0], self.reader.chunk_rows):
            out[start:stop] = np.asarray(self.csr(slice(start, stop)).sum(axis=1)).ravel()
        return out[:, None]


def is_streamed(x) -> bool:
    """Whether ``x`` is read from disk (a :class:`DiskRows`)."""
    return isinstance(x, DiskRows)


def disk_rows(adata: ad.AnnData, kind: str) -> DiskRows:
    """``adata``'s counts on disk (read with ``load_multiome(..., backed=True)``, restricted
    to some features) as a :class:`DiskRows` of ``kind`` (one of :data:`KINDS`).

    Raises
    ------
    ValueError
        ``adata`` is not backed, is a subset of its file's cells, or (``"counts"``) its
        first chunk holds values that are not raw counts.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}.")
    if not is_backed(adata):
        raise ValueError("This AnnData is in memory: read it with load_multiome(..., backed=True).")
    reader = _reader(adata)
    if adata.n_obs != reader.n_obs:
        raise ValueError(
            f"This backed AnnData holds {adata.n_obs} of its file's {reader.n_obs} cells: "
            "streaming reads whole files. Write the cells to use to a file of their own "
            "(data.write_h5ad(adata[cells].to_memory(), path) for a few, or filter when "
            "simulating/exporting) and read that with backed=True."
        )
    rows = DiskRows(reader, backed_columns(adata), kind)
    if kind == "counts" and not is_integer_valued(rows.csr(slice(0, min(rows.shape[0], 256))).data):
        raise ValueError(
            "The backed file's counts are not whole numbers: the negative binomial models raw "
            "counts; point layer= at the raw counts when reading the file."
        )
    logger.debug("streaming %s x %d (%s) from %s", rows.shape[0], rows.shape[1], kind, reader)
    return rows


def fit_sample(x, *, n_cells: int = FIT_CELLS, seed: int = 0):
    """What an input transform is fitted on: ``x`` itself in memory; for a
    :class:`DiskRows`, all its cells as CSR if at most ``n_cells``, else ``n_cells`` cells of
    whole chunks drawn with ``seed`` (a few contiguous reads instead of a pass over the
    file; the chunks come from all over it)."""
    if not is_streamed(x):
        return x
    n, size = x.shape[0], x.reader.chunk_rows
    if n <= n_cells:
        return x.csr(slice(0, n))
    rng = np.random.default_rng(seed)
    n_chunks = -(-n // size)
    picked = np.sort(rng.choice(n_chunks, size=min(n_chunks, -(-n_cells // size)), replace=False))
    rows = np.concatenate([np.arange(c * size, min((c + 1) * size, n)) for c in picked])
    rows = np.sort(rng.choice(rows, size=min(n_cells, len(rows)), replace=False))
    logger.info(
        "fitting the input transforms on %d of %d cells (%d chunks)", len(rows), n, len(picked)
    )
    return x.csr(rows)


def window_order(rows, *, chunk_rows: int | None = None, window_chunks: int | None = None):
    """The order of one pass over ``rows`` for data read a chunk at a time.

    Returns a function of a NumPy generator giving each pass's order: the chunks (rows
    ``i * chunk_rows`` on; default :data:`CHUNK_ROWS`) permuted, taken ``window_chunks``
    (default :data:`WINDOW_CHUNKS`) at a time, and the rows of each window permuted.
    Consecutive batches then touch at most two windows.
    """
    chunk_rows = CHUNK_ROWS if chunk_rows is None else int(chunk_rows)
    window_chunks = WINDOW_CHUNKS if window_chunks is None else int(window_chunks)
    rows = np.sort(np.asarray(rows, dtype=np.int64))
    chunk = rows // chunk_rows
    ids, starts = np.unique(chunk, return_index=True)
    groups = np.split(rows, starts[1:])

    def order(rng: np.random.Generator) -> np.ndarray:
        picked = rng.permutation(len(ids))
        parts = []
        for w in range(0, len(picked), window_chunks):
            window = np.concatenate([groups[i] for i in picked[w : w + window_chunks]])
            parts.append(rng.permutation(window))
        return np.concatenate(parts) if parts else rows

    return order
