"""Reading, validating and splitting paired GEX + ATAC AnnData (GSE194122 contract).

The contract (see ``DESIGN.md``): one AnnData, cells x features; ``var["feature_types"]``
in {"GEX", "ATAC"}; raw counts in ``layers["counts"]``; ``X`` some normalized version.
Modalities are always selected by ``feature_types``, never by column offsets.
:func:`load_multiome` reads the ``.h5ad`` itself and a 10x ``.h5`` or a ``.h5mu`` through
:mod:`mmae_utils.readers` (imported only then; ``readers`` imports nothing from here).
"""

from __future__ import annotations

import gzip
import os
import shutil
import tempfile
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import anndata as ad
import numpy as np
import scipy.sparse as sp

from ._utils import (
    ATAC,
    GEX,
    MultiomeError,
    atomic_path,
    logger,
    progress_bar,
    row_ranges,
    to_csr,
)

__all__ = [
    "ATAC",
    "CHUNK_SIZE",
    "GEX",
    "MIN_CELLS",
    "MIN_FEATURES",
    "MultiomeError",
    "FORMATS",
    "ValidationReport",
    "annotation_keys",
    "backed_columns",
    "combine_selected",
    "feature_types",
    "file_format",
    "is_backed",
    "iter_counts",
    "load_multiome",
    "open_counts",
    "read_counts",
    "split_modalities",
    "summarize",
    "validate_multiome",
    "write_h5ad",
]

#: Smallest dataset the pipeline accepts.
MIN_CELLS = 50
MIN_FEATURES = 10
#: Cells per chunk when counts are read or scanned chunk by chunk: at the real file's
#: density about 16 M stored values, some 130 MB, per chunk.
CHUNK_SIZE = 2000


@dataclass
class ValidationReport:
    """What :func:`validate_multiome` found (problems raise; these are the facts)."""

    n_cells: int
    n_gex: int
    n_atac: int
    counts_source: str
    empty_cells: int = 0
    empty_features: dict[str, int] = field(default_factory=dict)


def _fmt_examples(values, k: int = 5) -> str:
    values = list(values)
    more = f" (and {len(values) - k} more)" if len(values) > k else ""
    return ", ".join(repr(v) for v in values[:k]) + more


def _scan_counts(
    mat, n_rows: int, *, integer: bool, where: str, chunk: int = CHUNK_SIZE, progress: bool = False
):
    """Check finiteness, sign and integrality chunk by chunk; count zero rows and columns.

    Works on in-memory matrices and on backed sparse datasets alike.
    """
    col_nnz = None
    empty_rows = 0
    bar = progress_bar(total=n_rows, desc=f"validating {where}", unit="cell", disable=not progress)
    for start, stop in row_ranges(n_rows, chunk):
        block = mat[start:stop]
        block = to_csr(block) if sp.issparse(block) else sp.csr_matrix(np.asarray(block))
        data = block.data
        if data.size:
            bad = ~np.isfinite(data)
            if bad.any():
                raise MultiomeError(
                    f"{where} contains {int(bad.sum())} NaN or infinite values (first in cells "
                    f"{start}-{stop}). Counts must be finite: remove or repair those cells, e.g. "
                    "adata = adata[np.isfinite(adata.layers['counts'].sum(axis=1)).A1].copy()."
                )
            neg = data < 0
            if neg.any():
                raise MultiomeError(
                    f"{where} contains {int(neg.sum())} negative values (min {data.min():g}). "
                    "Counts cannot be negative: pass raw counts, not scaled or centred data."
                )
            if integer and not np.all(np.mod(data, 1) == 0):
                frac = data[np.mod(data, 1) != 0]
                raise MultiomeError(
                    f"{where} should hold raw counts but has {frac.size} non-integer values "
                    f"(e.g. {frac[0]:g}). Put the raw counts in layers['counts'] (or delete that "
                    "layer to let the pipeline fall back to X, with a warning)."
                )
        block.eliminate_zeros()
        empty_rows += int(np.sum(np.diff(block.indptr) == 0))
        nnz = np.bincount(block.indices, minlength=block.shape[1])
        col_nnz = nnz if col_nnz is None else col_nnz + nnz
        bar.update(stop - start)
    bar.close()
    return empty_rows, col_nnz


def feature_types(adata: ad.AnnData) -> np.ndarray:
    """``var["feature_types"]`` as strings, checked to be "GEX" or "ATAC" (clear errors otherwise)."""
    if "feature_types" not in adata.var:
        raise MultiomeError(
            "var['feature_types'] is missing, so GEX and ATAC features cannot be told apart. "
            "Add it, e.g. adata.var['feature_types'] = np.where(adata.var_names.str.match("
            "r'^chr[^-]+-\\d+-\\d+$'), 'ATAC', 'GEX')."
        )
    ft = adata.var["feature_types"].astype(str).to_numpy()
    unknown = sorted(set(ft) - {GEX, ATAC})
    if unknown:
        hint = ""
        if {"Gene Expression", "Peaks"} & set(unknown):
            hint = (
                " These look like 10x Cell Ranger names: map them with adata.var['feature_types']"
                " = adata.var['feature_types'].map({'Gene Expression': 'GEX', 'Peaks': 'ATAC'})."
            )
        raise MultiomeError(
            f"var['feature_types'] has values other than 'GEX' and 'ATAC': {_fmt_examples(unknown)}."
            + (hint or " Rename them to 'GEX' (genes) or 'ATAC' (peaks), or drop those features.")
        )
    return ft


def _check_unique_names(adata: ad.AnnData) -> None:
    """Raise if a cell or feature name occurs twice: names are how cells and features are found."""
    if adata.obs_names.has_duplicates:
        dup = adata.obs_names[adata.obs_names.duplicated()].unique()
        raise MultiomeError(
            f"{len(dup)} cell names occur more than once, e.g. {_fmt_examples(dup)}. Cell names "
            "must be unique: call adata.obs_names_make_unique() (or fix how files were concatenated)."
        )
    if adata.var_names.has_duplicates:
        dup = adata.var_names[adata.var_names.duplicated()].unique()
        raise MultiomeError(
            f"{len(dup)} feature names occur more than once, e.g. {_fmt_examples(dup)}. Feature "
            "names must be unique: call adata.var_names_make_unique()."
        )


def _check_sizes(
    adata: ad.AnnData, ft: np.ndarray, *, min_cells: int, min_features: int
) -> tuple[int, int]:
    """Numbers of GEX and ATAC features; raise if a modality is absent or the data are too small."""
    n_gex, n_atac = int(np.sum(ft == GEX)), int(np.sum(ft == ATAC))
    for name, n in ((GEX, n_gex), (ATAC, n_atac)):
        if n == 0:
            raise MultiomeError(
                f"No {name} features: var['feature_types'] has only "
                f"{'ATAC' if name == GEX else 'GEX'}. This pipeline needs paired GEX + ATAC "
                "measurements of the same cells in one AnnData (see DESIGN.md)."
            )
        if n < min_features:
            raise MultiomeError(f"Only {n} {name} features; at least {min_features} are needed.")
    if adata.n_obs < min_cells:
        raise MultiomeError(
            f"Only {adata.n_obs} cells; at least {min_cells} are needed to train and evaluate."
        )
    return n_gex, n_atac


def _counts_to_scan(adata: ad.AnnData, layer: str, counts):
    """The counts to check, where they come from and whether they must be integers: ``counts``,
    else ``layers[layer]``, else ``X`` with a warning (then not held to integers)."""
    source = f"layers[{layer!r}]"
    integer = True
    if counts is None:
        # anndata >= 0.13 lists X as layers[None]: None names no counts layer here
        if layer is not None and layer in adata.layers:
            counts = adata.layers[layer]
        else:
            warnings.warn(
                f"layers[{layer!r}] is absent: falling back to adata.X for model inputs. The "
                "pipeline derives inputs from raw counts (GEX: normalize_total + log1p; ATAC: "
                "binarize); if X is not raw counts, store the counts in adata.layers['counts'].",
                UserWarning,
                stacklevel=3,  # the caller of validate_multiome
            )
            counts, source, integer = adata.X, "X", False
    if counts is None:
        raise MultiomeError("adata has neither layers['counts'] nor X: there is no data to use.")
    return counts, source, integer


def _warn_empty(n_obs: int, source: str, empty_rows: int, empty_features: dict[str, int]) -> None:
    """Warn about cells and features without a single count: legal, but they carry nothing."""
    if empty_rows:
        warnings.warn(
            f"{empty_rows} of {n_obs} cells have no counts at all in {source}. They carry "
            "no information; remove them with sc.pp.filter_cells(adata, min_counts=1).",
            UserWarning,
            stacklevel=3,  # the caller of validate_multiome
        )
    if any(empty_features.values()):
        warnings.warn(
            f"{empty_features[GEX]} GEX and {empty_features[ATAC]} ATAC features are zero in "
            f"every cell of {source}; feature selection never keeps them. Remove them with "
            "sc.pp.filter_genes(adata, min_cells=1) if you want a smaller file.",
            UserWarning,
            stacklevel=3,  # the caller of validate_multiome
        )


def validate_multiome(
    adata: ad.AnnData,
    *,
    layer: str = "counts",
    counts=None,
    min_cells: int = MIN_CELLS,
    min_features: int = MIN_FEATURES,
    progress: bool = False,
) -> ValidationReport:
    """Check that ``adata`` follows the multiome contract; raise a clear error if not.

    Checked, each with a message that says what is wrong and how to fix it: duplicated cell
    or feature names; ``var["feature_types"]`` present, with only "GEX"/"ATAC" and both
    modalities present; enough cells and features; counts finite, non-negative and integer
    (when taken from ``layers[layer]``). Cells or features with no counts at all only warn,
    with their number. A missing ``layers[layer]`` falls back to ``X`` with a warning.

    Parameters
    ----------
    adata
        The multiome AnnData (in memory or backed).
    layer
        Layer with raw counts.
    counts
        The counts matrix to scan instead of ``adata.layers[layer]`` (used for backed files).
    min_cells, min_features
        Smallest number of cells, and of features per modality, accepted.
    progress
        Show a progress bar while scanning the counts.

    Returns
    -------
    A :class:`ValidationReport` with the sizes, where counts came from and the numbers of
    empty cells and features.

    Raises
    ------
    MultiomeError
        (a ``ValueError``) for every violation listed above.
    """
    _check_unique_names(adata)
    ft = feature_types(adata)
    n_gex, n_atac = _check_sizes(adata, ft, min_cells=min_cells, min_features=min_features)
    counts, source, integer = _counts_to_scan(adata, layer, counts)
    empty_rows, col_nnz = _scan_counts(
        counts, adata.n_obs, integer=integer, where=source, progress=progress
    )
    empty_features = {name: int(np.sum(col_nnz[ft == name] == 0)) for name in (GEX, ATAC)}
    _warn_empty(adata.n_obs, source, empty_rows, empty_features)
    return ValidationReport(adata.n_obs, n_gex, n_atac, source, empty_rows, empty_features)


def _decompress(path: Path, backed: bool) -> tuple[Path, bool]:
    """Decompress ``x.h5ad.gz``; returns (h5ad path, is_temporary)."""
    if backed:
        target = path.with_suffix("")  # x.h5ad next to the input, kept for next time
        if target.exists() and target.stat().st_mtime >= path.stat().st_mtime:
            return target, False
        logger.info("Decompressing %s to %s (kept for backed reading)", path.name, target)
    else:
        fd, tmp = tempfile.mkstemp(suffix=".h5ad")
        os.close(fd)
        target = Path(tmp)
    try:
        with atomic_path(target) as tmp_out:
            with gzip.open(path, "rb") as src, open(tmp_out, "wb") as dst:
                shutil.copyfileobj(src, dst, length=1 << 22)
    except (OSError, EOFError) as err:
        if not backed:
            target.unlink(missing_ok=True)
        raise OSError(
            f"Cannot decompress {path}: {err}. The file is not a complete gzip archive; "
            "download it again (mmae_utils.datasets.fetch_bmmc verifies its checksum)."
        ) from err
    return target, not backed


def _read_backed(path: Path, layer: str) -> ad.AnnData:
    """Metadata in memory; the counts stay on disk (see :func:`open_counts`)."""
    import h5py
    from anndata.io import read_elem

    with h5py.File(path, "r") as f:
        obs, var = read_elem(f["obs"]), read_elem(f["var"])
        uns = read_elem(f["uns"]) if "uns" in f else {}
        obsm = {}
        if "obsm" in f:
            for key in f["obsm"]:
                elem = f["obsm"][key]
                if isinstance(elem, h5py.Dataset):  # dense embeddings are small; sparse ones stay
                    obsm[key] = read_elem(elem)
        source = f"layers/{layer}" if f.get(f"layers/{layer}") is not None else "X"
    adata = ad.AnnData(obs=obs, var=var, obsm=obsm, uns=uns)
    adata.uns["mmae_backed"] = {"path": str(path), "counts": source}
    return adata


def open_counts(adata: ad.AnnData):
    """Open the on-disk counts of an AnnData read with ``load_multiome(..., backed=True)``.

    Returns
    -------
    ``(h5py.File, matrix)``: the open file (close it when done) and the backed sparse
    matrix (``anndata`` ``CSRDataset``) whose row slices ``m[i:j]`` are read from disk.
    """
    import h5py
    from anndata.io import sparse_dataset

    info = adata.uns.get("mmae_backed")
    if info is None:
        raise ValueError("This AnnData was not read with load_multiome(..., backed=True).")
    f = h5py.File(info["path"], "r")
    elem = f[info["counts"]]
    if isinstance(elem, h5py.Dataset):
        return f, elem
    return f, sparse_dataset(elem)


#: The file formats :func:`load_multiome` reads, by suffix.
FORMATS = {
    ".h5ad": "AnnData in the GSE194122 schema (the GEO file, synthetic_bmmc, your own)",
    ".h5ad.gz": "the same, gzip-compressed (as GEO serves it)",
    ".h5": "10x Cell Ranger ARC filtered_feature_bc_matrix.h5",
    ".h5mu": "muon / MuData with a GEX and an ATAC modality",
}


def file_format(path: str | os.PathLike) -> str:
    """The suffix of :data:`FORMATS` that ``path`` ends with (``".h5ad.gz"`` before ``".h5ad"``).

    Raises
    ------
    ValueError
        For any other suffix, listing the formats that are read.
    """
    name = Path(path).name.lower()
    for suffix in sorted(FORMATS, key=len, reverse=True):
        if name.endswith(suffix):
            return suffix
    listing = "; ".join(f"{k}: {v}" for k, v in FORMATS.items())
    raise ValueError(
        f"Cannot tell the format of {Path(path).name}: supported are {listing}. Rename the file "
        "to its format's suffix, or convert it (e.g. with anndata or muon) to one of these."
    )


def _check_path(path: Path) -> None:
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist. Give the path of a multiome .h5ad, 10x .h5 or .h5mu file, "
            "use mmae_utils.datasets.fetch_bmmc() for the GEO file, or DATA='demo' for the "
            "built-in data."
        )
    if path.is_dir():
        raise IsADirectoryError(
            f"{path} is a folder; give the path of a file inside it (.h5ad, 10x .h5 or .h5mu)."
        )


def _read_h5ad(path: Path, *, backed: bool, layer: str) -> ad.AnnData:
    """``.h5ad`` / ``.h5ad.gz``, in memory or backed (a ``.gz`` is decompressed first)."""
    temporary = False
    if path.name.lower().endswith(".gz"):
        path, temporary = _decompress(path, backed)
    try:
        try:
            return _read_backed(path, layer) if backed else ad.read_h5ad(path)
        except Exception as err:  # h5py/anndata raise many types for unreadable files
            raise OSError(
                f"Cannot read {path} as an AnnData .h5ad file ({type(err).__name__}: {err}). "
                "Check that it is a complete .h5ad written by anndata (not .h5, .loom or .h5mu); "
                "a truncated download also gives this error."
            ) from err
    finally:
        if temporary:
            path.unlink(missing_ok=True)


def _read_any(path: Path, fmt: str, *, backed: bool, layer: str, modalities) -> ad.AnnData:
    """Dispatch to the reader of ``fmt`` (``readers`` is imported only for its formats)."""
    if modalities is not None and fmt != ".h5mu":
        raise ValueError(f"modalities= applies to .h5mu files only, not to {path.name}.")
    if fmt in (".h5ad", ".h5ad.gz"):
        return _read_h5ad(path, backed=backed, layer=layer)
    if backed:
        raise ValueError(
            f"backed=True reads .h5ad files only, not {fmt} ({path.name}). Read it into memory "
            "(backed=False), or convert it once and read that backed: "
            "data.write_h5ad(data.load_multiome(path), 'mine.h5ad')."
        )
    from . import readers

    if fmt == ".h5":
        return readers.read_10x_h5(path)
    return readers.read_h5mu(path, modalities=modalities)


def load_multiome(
    path: str | os.PathLike,
    *,
    backed: bool = False,
    layer: str = "counts",
    validate: bool = True,
    progress: bool | None = None,
    modalities: Mapping[str, str] | None = None,
) -> ad.AnnData:
    """Read a multiome file in any of :data:`FORMATS` and check it against the contract.

    The format is told by the suffix: ``.h5ad`` / ``.h5ad.gz`` (the GSE194122 schema, read
    as it is), ``.h5`` (10x Cell Ranger ARC ``filtered_feature_bc_matrix.h5``, converted by
    :func:`mmae_utils.readers.read_10x_h5`) or ``.h5mu`` (muon / MuData, converted by
    :func:`mmae_utils.readers.read_h5mu`). Every format ends in the same contract AnnData and
    the same validation; the input file is never modified.

    Parameters
    ----------
    path
        The file: the GEO file, one written by :func:`~mmae_utils.datasets.synthetic_bmmc`,
        your own ``.h5ad`` in the same schema, a 10x ``.h5`` or a ``.h5mu``. A ``.gz`` file
        is decompressed to a temporary file (``backed=False``) or to ``x.h5ad`` next to it
        (``backed=True``, reused on later calls).
    backed
        ``.h5ad`` only: keep the count matrices on disk: ``obs``, ``var``, ``uns`` and the
        dense ``obsm`` entries are read, the counts are scanned in chunks for validation and
        later read chunk by chunk (:func:`open_counts`). For files larger than memory. A
        ``.h5`` or ``.h5mu`` is always read into memory (``backed=True`` raises).
    layer
        Layer with raw counts (``.h5ad``; the readers of the other formats write ``"counts"``).
    validate
        Run :func:`validate_multiome` (recommended).
    progress
        Progress bar while validating (default: for more than 20,000 cells).
    modalities
        ``.h5mu`` only: ``{"GEX": name, "ATAC": name}``, the modalities holding genes and
        peaks (default ``{"GEX": "rna", "ATAC": "atac"}``, muon's names).

    Returns
    -------
    The AnnData (contract: ``var["feature_types"]``, ``var["gene_id"]``,
    ``layers["counts"]``, ``X``; from a ``.h5`` or ``.h5mu`` also the QC columns of
    ``obs``, see :mod:`mmae_utils.readers`). Labels (``obs["cell_type"]``, ``obs["batch"]``)
    are not required: a 10x file has none. With ``backed=True`` it has no ``X``/``layers``
    in memory and ``adata.uns["mmae_backed"]`` records the file and the counts' location.

    Raises
    ------
    FileNotFoundError
        The path does not exist.
    ValueError
        The suffix is none of :data:`FORMATS` (the message lists them), or ``backed=True``
        / ``modalities`` were given for a format they do not apply to.
    OSError
        The file is not readable in its format (or not a complete ``.gz``).
    MultiomeError
        The content violates the contract (see :func:`validate_multiome`), a ``.h5`` is not
        a 10x matrix (the message names what is missing), or a ``.h5mu`` lacks a modality.
    """
    path = Path(path).expanduser()
    fmt = file_format(path) if not path.is_dir() else None
    _check_path(path)
    adata = _read_any(path, fmt, backed=backed, layer=layer, modalities=modalities)
    if validate:
        if progress is None:
            progress = adata.n_obs > 20_000
        if backed:
            f, counts = open_counts(adata)
            with f:
                validate_multiome(adata, layer=layer, counts=counts, progress=progress)
        else:
            validate_multiome(adata, layer=layer, progress=progress)
    logger.info("Loaded %s: %d cells x %d features", path.name, adata.n_obs, adata.n_vars)
    return adata


def split_modalities(adata: ad.AnnData, *, copy: bool = True) -> tuple[ad.AnnData, ad.AnnData]:
    """Split a multiome AnnData into GEX and ATAC parts by ``var["feature_types"]``.

    Parameters
    ----------
    adata
        Multiome AnnData.
    copy
        Return independent copies (default) rather than views.

    Returns
    -------
    ``(gex, atac)``: AnnData objects with the same cells and ``obs`` (and ``obsm``), holding
    only the features whose ``feature_types`` is "GEX" resp. "ATAC", in their original order.
    """
    ft = feature_types(adata)
    parts = []
    for name in (GEX, ATAC):
        mask = ft == name
        if not mask.any():
            raise MultiomeError(f"No {name} features in var['feature_types']: cannot split.")
        view = adata[:, np.flatnonzero(mask)]
        parts.append(view.copy() if copy else view)
    return parts[0], parts[1]


def write_h5ad(adata: ad.AnnData, path: str | os.PathLike) -> Path:
    """Write ``adata`` to ``path`` atomically (temporary file + rename).

    Returns
    -------
    The path written. A failure leaves any previous file at ``path`` untouched.
    """
    path = Path(path)
    if path.suffix != ".h5ad":
        raise ValueError(f"Expected a .h5ad path, got {path}.")
    with atomic_path(path) as tmp:
        adata.write_h5ad(tmp)
    return path


def combine_selected(
    gex: ad.AnnData, atac: ad.AnnData, *, key: str = "highly_variable", progress: bool = True
) -> ad.AnnData:
    """Join the selected GEX and ATAC features back into one multiome AnnData.

    Parameters
    ----------
    gex, atac
        The two modalities (same cells, same order) after
        :func:`~mmae_utils.features.select_gex` / :func:`~mmae_utils.features.select_atac`.
    key
        Boolean ``var`` column marking the features to keep.
    progress
        Progress bar when reading backed data.

    Returns
    -------
    In-memory AnnData with the selected genes then the selected peaks, ``layers`` and ``X``
    as in the inputs, ``var`` keeping ``feature_types`` and ``gene_id``,
    ``obs``/``obsm``/``uns`` from ``gex``. For backed inputs only the selected columns of
    the counts are read, chunk by chunk, into ``layers["counts"]`` (``X`` is then ``None``).
    """
    if not gex.obs_names.equals(atac.obs_names):
        raise ValueError("gex and atac must hold the same cells in the same order.")
    for name, part in (("gex", gex), ("atac", atac)):
        if key not in part.var:
            raise KeyError(f"{name}.var[{key!r}] is missing: run feature selection first.")
    if is_backed(gex) or is_backed(atac):
        return _combine_selected_backed(gex, atac, key=key, progress=progress)
    g = gex[:, gex.var[key].to_numpy(bool)]
    a = atac[:, atac.var[key].to_numpy(bool)]
    out = ad.concat([g, a], axis=1, merge="first", uns_merge="first")
    out.obs = gex.obs.copy()
    out.obsm = dict(gex.obsm)
    out.uns = dict(gex.uns)
    cols = [c for c in ("feature_types", "gene_id") if c in out.var]
    out.var = out.var[cols]
    return out


def annotation_keys(
    adata: ad.AnnData, *, label_key: str | None = "cell_type", batch_key: str | None = "batch"
) -> tuple[str | None, str | None]:
    """The cell-type and batch columns the data have: each key, or ``None`` without it.

    Most users' data have no cell-type labels, some no batches: the tutorial then goes on
    without them (the metrics that need them are skipped). A key that names no column of
    ``obs``, or a column with no value, warns once and counts as ``None``; ``None`` is
    taken as given, silently. A column known for only some cells is kept (the evaluation
    then asks to subset to those cells).

    Parameters
    ----------
    adata
        Any AnnData.
    label_key, batch_key
        The ``obs`` columns of the cell types and of the batches, or ``None``.

    Returns
    -------
    ``(label_key, batch_key)``: the keys found in ``adata.obs``, ``None`` for the others.
    """
    out = []
    for key, what, name in (
        (label_key, "cell-type labels", "label_key"),
        (batch_key, "batches", "batch_key"),
    ):
        if key is not None and (key not in adata.obs or adata.obs[key].isna().all()):
            problem = "is empty" if key in adata.obs else "does not exist"
            warnings.warn(
                f"No {what}: obs[{key!r}] {problem} (obs columns: {list(adata.obs.columns)[:12]}"
                f"). Going on without {what}; the steps that need them are skipped. Set "
                f"{name} ({name.upper()} in the notebooks) to the column that holds them, or "
                "to None to silence this.",
                UserWarning,
                stacklevel=2,
            )
            key = None
        out.append(key)
    return out[0], out[1]


def summarize(adata: ad.AnnData, *, layer: str = "counts"):
    """Per-modality overview: features, non-zero fraction, median counts and features per cell.

    Parameters
    ----------
    adata
        Multiome AnnData (in memory, or read with ``backed=True``: then the counts are
        read from disk in chunks).
    layer
        Layer with raw counts (``X`` when absent).

    Returns
    -------
    A DataFrame with one row per modality.
    """
    import pandas as pd

    ft = feature_types(adata)
    per_cell = {m: np.zeros(adata.n_obs) for m in (GEX, ATAC)}
    per_cell_n = {m: np.zeros(adata.n_obs) for m in (GEX, ATAC)}
    cols = {m: np.flatnonzero(ft == m) for m in (GEX, ATAC)}
    for start, stop, block in iter_counts(adata, layer=layer):
        for m in (GEX, ATAC):
            part = block[:, cols[m]]
            per_cell[m][start:stop] = np.asarray(part.sum(axis=1)).ravel()
            per_cell_n[m][start:stop] = np.diff(part.indptr)
    rows = []
    for m in (GEX, ATAC):
        n = len(cols[m])
        rows.append(
            {
                "modality": m,
                "features": n,
                "non-zero %": 100 * per_cell_n[m].sum() / max(1, n * adata.n_obs),
                "median counts / cell": float(np.median(per_cell[m])),
                "median features / cell": float(np.median(per_cell_n[m])),
            }
        )
    return pd.DataFrame(rows).set_index("modality").round(2)


def is_backed(adata: ad.AnnData) -> bool:
    """Whether ``adata`` was read with ``load_multiome(..., backed=True)`` (counts on disk)."""
    return "mmae_backed" in adata.uns


def backed_columns(adata: ad.AnnData) -> np.ndarray:
    """Positions in the on-disk matrix of ``adata``'s features (works on feature subsets)."""
    import h5py
    import pandas as pd
    from anndata.io import read_elem

    info = adata.uns["mmae_backed"]
    with h5py.File(info["path"], "r") as f:
        file_var = pd.Index(read_elem(f["var"]).index)
    cols = file_var.get_indexer(adata.var_names)
    if (cols < 0).any():
        raise KeyError("Some features of this AnnData are not in its backing file.")
    return cols


def iter_counts(
    adata: ad.AnnData,
    *,
    layer: str = "counts",
    chunk_size: int = CHUNK_SIZE,
    progress: bool = False,
    desc: str = "reading counts",
):
    """Iterate over the raw counts of ``adata`` in row chunks, as CSR ``float`` blocks.

    Works alike on in-memory data (``layers[layer]``, else ``X``) and on data read with
    ``load_multiome(..., backed=True)``, where only one chunk is in memory at a time and
    only ``adata``'s features (e.g. one modality) are kept from each chunk.

    Yields
    ------
    ``(start, stop, block)``: cells ``start:stop`` as a ``csr_matrix`` with ``adata.n_vars``
    columns.
    """
    handle = None
    if is_backed(adata):
        cols = backed_columns(adata)
        handle, counts = open_counts(adata)
        whole = np.array_equal(cols, np.arange(len(cols))) and counts.shape[1] == len(cols)
    else:
        counts = adata.layers[layer] if layer in adata.layers else adata.X
        cols, whole = None, True
    try:
        bar = progress_bar(total=adata.n_obs, desc=desc, unit="cell", disable=not progress)
        for start, stop in row_ranges(adata.n_obs, chunk_size):
            block = counts[start:stop]
            block = to_csr(block) if sp.issparse(block) else sp.csr_matrix(np.asarray(block))
            if not whole:
                block = block[:, cols]
            yield start, stop, block
            bar.update(stop - start)
        bar.close()
    finally:
        if handle is not None:
            handle.close()


def _combine_selected_backed(gex, atac, *, key: str, progress: bool) -> ad.AnnData:
    g = gex[:, gex.var[key].to_numpy(bool)]
    a = atac[:, atac.var[key].to_numpy(bool)]
    var = ad.concat([g, a], axis=1, merge="first").var
    both = ad.AnnData(obs=gex.obs[[]], var=var, uns={"mmae_backed": gex.uns["mmae_backed"]})
    counts = read_counts(both, progress=progress, desc="reading selected features")
    uns = {k: v for k, v in gex.uns.items() if k != "mmae_backed"}
    cols = [c for c in ("feature_types", "gene_id") if c in var]
    return ad.AnnData(
        obs=gex.obs.copy(), var=var[cols], obsm=dict(gex.obsm), uns=uns, layers={"counts": counts}
    )


def read_counts(
    adata: ad.AnnData,
    *,
    layer: str = "counts",
    progress: bool = False,
    desc: str = "reading counts",
) -> sp.csr_matrix:
    """All of ``adata``'s counts as one in-memory CSR float32 matrix, read chunk by chunk.

    For backed data only ``adata``'s features are kept from each chunk, and each chunk is
    released as soon as it is copied into the result.

    Returns
    -------
    ``csr_matrix`` float32, ``adata.n_obs`` x ``adata.n_vars``.
    """
    blocks = [b for _, _, b in iter_counts(adata, layer=layer, progress=progress, desc=desc)]
    if not blocks:
        return sp.csr_matrix(adata.shape, dtype=np.float32)
    return _stack_rows(blocks)


def _stack_rows(blocks: list) -> sp.csr_matrix:
    """``vstack`` for CSR row blocks that frees each block once copied (peak: result + one block)."""
    nnz = sum(b.nnz for b in blocks)
    n_rows = sum(b.shape[0] for b in blocks)
    n_cols = blocks[0].shape[1]
    data = np.empty(nnz, dtype=np.float32)
    indices = np.empty(nnz, dtype=np.int64 if nnz >= 2**31 or n_cols >= 2**31 else np.int32)
    indptr = np.empty(n_rows + 1, dtype=indices.dtype)
    indptr[0] = 0
    pos = row = 0
    for i in range(len(blocks)):
        b = blocks[i]
        blocks[i] = None  # let the block go as soon as it is copied
        data[pos : pos + b.nnz] = b.data
        indices[pos : pos + b.nnz] = b.indices
        indptr[row + 1 : row + b.shape[0] + 1] = b.indptr[1:] + pos
        pos += b.nnz
        row += b.shape[0]
        del b
    return sp.csr_matrix((data, indices, indptr), shape=(n_rows, n_cols))
