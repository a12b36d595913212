"""Readers for the multiome files users have, and a ``.h5mu`` writer for the results.

Each reader turns one format into the AnnData of the dataset contract (``DESIGN.md``; the
GSE194122 schema that :func:`mmae_utils.data.validate_multiome` checks):

- :func:`read_10x_h5`: Cell Ranger ARC's ``filtered_feature_bc_matrix.h5``;
- :func:`read_h5mu`: a muon / MuData ``.h5mu`` with a GEX and an ATAC modality.

:func:`mmae_utils.data.load_multiome` picks the reader by the file's suffix and validates
the result; call the readers directly only to skip validation. :func:`write_h5mu` writes
the embeddings back as a ``.h5mu``, for users who work in muon.

What both readers write, alike:

- genes first, then peaks; ``var["feature_types"]`` "GEX" / "ATAC"; ``var["gene_id"]`` (the
  Ensembl id for genes, the peak name for peaks, as in the GEO file); gene symbols as GEX
  names (made unique), peaks named ``chrN-start-end`` (``chrN:start-end`` is rewritten);
- ``layers["counts"]``: the raw counts, CSR float32 (integers, exact below 2**24);
- ``X``: per modality ``log1p`` of counts scaled to 10,000 per cell, CSR float32, which is
  what the GEO file and :func:`~mmae_utils.datasets.synthetic_bmmc` hold there. Nothing in
  the pipeline reads it while ``layers["counts"]`` exists; it is there so that the result
  looks like every other contract AnnData (e.g. to scanpy plotting);
- ``obs``: the cells, plus the QC columns ``GEX_n_counts``, ``GEX_n_genes``,
  ``GEX_pct_counts_mt`` (genes ``MT-*``) and ``ATAC_nCount_peaks`` where the file has none.
  No ``cell_type`` / ``batch`` is invented: a 10x file has neither.

This module imports nothing from :mod:`mmae_utils.data` (``data`` imports it), and MuData
only when a ``.h5mu`` is read or written.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Mapping
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ._utils import ATAC, GEX, MultiomeError, atomic_path, logger, to_csr
from .pp import log_normalize

__all__ = [
    "H5MU_MODALITIES",
    "TENX_FEATURE_TYPES",
    "TENX_REQUIRED",
    "is_10x_h5",
    "peak_names",
    "read_10x_h5",
    "read_h5mu",
    "write_h5mu",
]

#: Cell Ranger ARC's ``feature_type`` values and the contract's names for them; other types
#: (e.g. "Antibody Capture") are dropped.
TENX_FEATURE_TYPES = {"Gene Expression": GEX, "Peaks": ATAC}
#: The datasets a Cell Ranger (ARC) feature-barcode matrix ``.h5`` has.
TENX_REQUIRED = (
    "matrix/data",
    "matrix/indices",
    "matrix/indptr",
    "matrix/shape",
    "matrix/barcodes",
    "matrix/features/id",
    "matrix/features/name",
    "matrix/features/feature_type",
)
#: Default modality names of a ``.h5mu``: muon's ``"rna"`` and ``"atac"``.
H5MU_MODALITIES = {GEX: "rna", ATAC: "atac"}

_PEAK = r"^([^:\s]+):(\d+)-(\d+)$"


def peak_names(names) -> pd.Index:
    """Peak names in the contract's form: ``chr1:100-200`` becomes ``chr1-100-200``.

    Names already of the form ``chrN-start-end`` (or anything else) are kept as they are.

    Returns
    -------
    A :class:`pandas.Index` of strings, as long as ``names``.
    """
    return pd.Index(np.asarray(names, dtype=str)).str.replace(_PEAK, r"\1-\2-\3", regex=True)


def _strings(values) -> np.ndarray:
    """HDF5 strings (fixed-length bytes or variable-length) as a numpy ``str`` array."""
    values = np.asarray(values)
    if values.dtype.kind == "S":
        return np.char.decode(values, "utf-8").astype(str)
    return np.array([v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values])


def _missing_10x(f) -> list[str]:
    return [name for name in TENX_REQUIRED if name not in f]


def is_10x_h5(path: str | os.PathLike) -> bool:
    """Whether ``path`` is an HDF5 file with a Cell Ranger (ARC) feature-barcode matrix.

    Returns
    -------
    ``True`` when every dataset of :data:`TENX_REQUIRED` is present, ``False`` otherwise
    (also for files that are not HDF5).
    """
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return not _missing_10x(f)
    except OSError:
        return False


def _not_10x_message(path: Path, f, missing: list[str]) -> str:
    import h5py

    top = sorted(f.keys())
    hint = ""
    if "X" in top and "obs" in top and "var" in top:
        hint = " It looks like an AnnData file: rename it to .h5ad."
    elif "mod" in top:
        hint = " It looks like a MuData file: rename it to .h5mu."
    elif top and all(isinstance(f[k], h5py.Group) and "genes" in f[k] for k in top):
        hint = (
            " It looks like a legacy (Cell Ranger < 3) per-genome matrix, which has no peaks:"
            " use Cell Ranger ARC's output instead."
        )
    return (
        f"{path} is not a 10x Cell Ranger ARC feature-barcode matrix: it lacks "
        f"{', '.join(missing)} (its top-level groups: {top or 'none'}).{hint} Give the "
        "'filtered_feature_bc_matrix.h5' from the 'outs/' folder of 'cellranger-arc count'."
    )


def _read_10x_arrays(path: Path) -> dict[str, np.ndarray]:
    """The matrix and feature datasets of a 10x ``.h5`` (clear errors for other files)."""
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise OSError(
            f"Cannot read {path} as HDF5 ({err}). A 10x .h5 is an HDF5 file written by "
            "Cell Ranger; a truncated copy also gives this error."
        ) from err
    with f:
        missing = _missing_10x(f)
        if missing:
            raise MultiomeError(_not_10x_message(path, f, missing))
        m, feats = f["matrix"], f["matrix/features"]
        out = {k: m[k][()] for k in ("data", "indices", "indptr", "shape")}
        out["barcodes"] = _strings(m["barcodes"][()])
        for key in ("id", "name", "feature_type", "genome", "interval"):
            if key in feats:
                out[key] = _strings(feats[key][()])
    n_features, n_cells = (int(v) for v in out["shape"])
    if len(out["indptr"]) != n_cells + 1 or len(out["barcodes"]) != n_cells:
        raise MultiomeError(
            f"{path}: matrix/shape says {n_cells} barcodes but matrix/indptr has "
            f"{len(out['indptr'])} entries and matrix/barcodes {len(out['barcodes'])}. The file "
            "is damaged: copy it again from Cell Ranger ARC's outs/ folder."
        )
    if len(out["id"]) != n_features:
        raise MultiomeError(
            f"{path}: matrix/shape says {n_features} features, ids say {len(out['id'])}."
        )
    return out


def _10x_var(arrays: dict[str, np.ndarray], keep: np.ndarray) -> pd.DataFrame:
    """``var`` of the kept features: contract types, unique gene symbols, peak names."""
    kinds = pd.Series(arrays["feature_type"][keep]).map(TENX_FEATURE_TYPES).to_numpy()
    ids = arrays["id"][keep]
    names = arrays["name"][keep].astype(object)
    is_peak = kinds == ATAC
    if "interval" in arrays:
        interval = arrays["interval"][keep]
        usable = is_peak & (interval != "NA") & (interval != "")
        names[usable] = interval[usable]
    names[is_peak] = peak_names(names[is_peak]).to_numpy()
    gene_id = ids.astype(object)
    gene_id[is_peak] = names[is_peak]
    var = pd.DataFrame(
        {"feature_types": kinds, "gene_id": gene_id.astype(str)},
        index=pd.Index(names.astype(str)),
    )
    var.index = ad.utils.make_index_unique(var.index)
    return var


def _log_drop(path: Path, types: np.ndarray, keep: np.ndarray) -> None:
    dropped = pd.Series(types[~keep]).value_counts()
    if len(dropped):
        listing = ", ".join(f"{n} {t!r}" for t, n in dropped.items())
        logger.info("%s: dropped %s features (only genes and peaks are used)", path.name, listing)


def _qc_obs(obs: pd.DataFrame, counts: sp.csr_matrix, var: pd.DataFrame) -> pd.DataFrame:
    """``obs`` with the contract's QC columns added where absent (``obs`` itself is not changed)."""
    obs = obs.copy()
    gex = np.flatnonzero(var["feature_types"].to_numpy() == GEX)
    atac = np.flatnonzero(var["feature_types"].to_numpy() == ATAC)
    g = counts[:, gex]
    totals = np.asarray(g.sum(axis=1)).ravel()
    mt = var.index[gex].str.upper().str.startswith("MT-")
    mt_counts = np.asarray(g[:, np.flatnonzero(mt)].sum(axis=1)).ravel()
    qc = {
        "GEX_n_counts": totals.astype(np.float32),
        "GEX_n_genes": np.diff(g.indptr).astype(np.int32),
        "GEX_pct_counts_mt": (
            100 * np.divide(mt_counts, totals, out=np.zeros_like(totals), where=totals > 0)
        ).astype(np.float32),
        "ATAC_nCount_peaks": np.asarray(counts[:, atac].sum(axis=1)).ravel().astype(np.float32),
    }
    for key, values in qc.items():
        if key not in obs:
            obs[key] = values
    return obs


def _assemble(counts, var: pd.DataFrame, obs: pd.DataFrame, **extra) -> ad.AnnData:
    """The contract AnnData: genes then peaks, counts in ``layers``, log-normalized ``X``.

    ``counts`` are the cells x features counts in ``var``'s order; ``extra`` (``obsm``,
    ``uns``) is passed to AnnData.
    """
    counts = to_csr(counts).astype(np.float32)
    kinds = var["feature_types"].to_numpy()
    order = np.concatenate([np.flatnonzero(kinds == GEX), np.flatnonzero(kinds == ATAC)])
    if not np.array_equal(order, np.arange(len(order))):
        counts, var = counts[:, order], var.iloc[order]
    n_gex = int(np.sum(kinds == GEX))
    counts.sort_indices()
    x = sp.hstack(
        [log_normalize(counts[:, :n_gex]), log_normalize(counts[:, n_gex:])], format="csr"
    ).astype(np.float32)
    obs = _qc_obs(obs, counts, var)
    return ad.AnnData(X=x, obs=obs, var=var, layers={"counts": counts}, **extra)


def read_10x_h5(path: str | os.PathLike) -> ad.AnnData:
    """Read Cell Ranger ARC's ``filtered_feature_bc_matrix.h5`` into the dataset contract.

    The HDF5 layout read is Cell Ranger's (version 3 and later, ARC included):
    ``matrix/{data,indices,indptr,shape,barcodes}`` (a features x barcodes CSC matrix) and
    ``matrix/features/{id,name,feature_type,genome,interval}``. Features of type
    "Gene Expression" become "GEX" and "Peaks" become "ATAC"; all other types (e.g.
    "Antibody Capture") are dropped, with an info log of how many. The file is only read.

    Parameters
    ----------
    path
        The ``.h5`` file.

    Returns
    -------
    In-memory AnnData, cells x (genes then peaks), with

    - ``obs_names``: the barcodes (e.g. ``AAACAGCCAAACAACA-1``); ``obs``: the QC columns
      ``GEX_n_counts``, ``GEX_n_genes``, ``GEX_pct_counts_mt``, ``ATAC_nCount_peaks`` (no
      ``cell_type`` or ``batch``: the file has none);
    - ``var_names``: gene symbols (``features/name``, made unique: ``TBCE``, ``TBCE-1``) and
      peaks ``chrN-start-end`` (from ``features/interval``, ``chr1:100-200`` ->
      ``chr1-100-200``); ``var["feature_types"]`` "GEX" / "ATAC"; ``var["gene_id"]``: the
      Ensembl id (``features/id``) for genes, the peak name for peaks;
    - ``layers["counts"]``: the counts, CSR float32;
    - ``X``: per-modality ``log1p`` of counts per 10,000, CSR float32;
    - ``uns["genome"]``: the genome name when the file has a single one.

    Raises
    ------
    OSError
        The file is not HDF5.
    MultiomeError
        It is HDF5 but not a 10x feature-barcode matrix (names what is missing), or its
        arrays disagree in size.
    """
    path = Path(path)
    arrays = _read_10x_arrays(path)
    n_features, n_cells = (int(v) for v in arrays["shape"])
    matrix = sp.csr_matrix(
        (arrays["data"], arrays["indices"], arrays["indptr"]), shape=(n_cells, n_features)
    )
    keep = np.isin(arrays["feature_type"], list(TENX_FEATURE_TYPES))
    _log_drop(path, arrays["feature_type"], keep)
    var = _10x_var(arrays, keep)
    counts = matrix[:, np.flatnonzero(keep)] if not keep.all() else matrix
    uns = {}
    genomes = np.unique(arrays.get("genome", np.array([]))[keep]) if "genome" in arrays else []
    if len(genomes) == 1:
        uns["genome"] = str(genomes[0])
    obs = pd.DataFrame(index=pd.Index(arrays["barcodes"]))
    return _assemble(counts, var, obs, uns=uns)


# --------------------------------------------------------------------------------------
# MuData
# --------------------------------------------------------------------------------------


def _modality_names(modalities: Mapping[str, str] | None) -> dict[str, str]:
    """``{"GEX": name, "ATAC": name}`` from the user's mapping (keys in any case)."""
    if modalities is None:
        return dict(H5MU_MODALITIES)
    if not isinstance(modalities, Mapping):
        raise TypeError(
            f"modalities must be a mapping like {{'GEX': 'rna', 'ATAC': 'atac'}}, got {modalities!r}."
        )
    out = {str(k).upper(): str(v) for k, v in modalities.items()}
    if set(out) != {GEX, ATAC}:
        raise ValueError(
            f"modalities must name exactly the GEX and the ATAC modality, e.g. "
            f"{{'GEX': 'rna', 'ATAC': 'atac'}}; got keys {sorted(modalities)}."
        )
    return out


@contextlib.contextmanager
def _mudata_quietly():
    """``mudata``, with its update() pulling nothing and without its FutureWarnings about that.

    mudata 0.4 replaced ``md.set_options(...)`` with the ``md.settings`` object; pulling on
    update is off by default there, but a user's environment (``MUDATA_PULL_ON_UPDATE``) can
    turn it on, so it is still switched off here.
    """
    import mudata as md

    with warnings.catch_warnings(), md.settings.override(pull_on_update=False):
        warnings.simplefilter("ignore", FutureWarning)
        yield md


def _read_mudata(path: Path):
    try:
        with _mudata_quietly() as md:
            return md.read_h5mu(path)
    except Exception as err:  # h5py / mudata raise many types for unreadable files
        raise OSError(
            f"Cannot read {path} as a MuData .h5mu file ({type(err).__name__}: {err}). Check "
            "that it was written by muon/mudata (write_h5mu); a truncated copy also gives this error."
        ) from err


def _modality_counts(mod: ad.AnnData, name: str, path: Path):
    """The raw counts of one modality: ``layers["counts"]``, else ``X`` with a warning."""
    if "counts" in mod.layers:
        return mod.layers["counts"]
    warnings.warn(
        f"Modality {name!r} of {path.name} has no layers['counts']: taking its X as the raw "
        "counts. If X is normalized, validation fails on non-integer values; then store the "
        f"raw counts as mdata.mod[{name!r}].layers['counts'].",
        UserWarning,
        stacklevel=3,  # the caller of read_h5mu
    )
    return mod.X


def _modality_var(mod: ad.AnnData, kind: str) -> pd.DataFrame:
    names = peak_names(mod.var_names) if kind == ATAC else pd.Index(mod.var_names.astype(str))
    gene_id = names.to_numpy()
    if kind == GEX:
        for col in ("gene_ids", "gene_id"):
            if col in mod.var:
                gene_id = mod.var[col].astype(str).to_numpy()
                break
    return pd.DataFrame({"feature_types": kind, "gene_id": gene_id}, index=names)


def _take_rows(value, rows: np.ndarray):
    if isinstance(value, pd.DataFrame):
        return value.iloc[rows]
    return value[rows]


def _merged_obs(mdata, names: dict[str, str], cells: pd.Index, rows: np.ndarray) -> pd.DataFrame:
    """Global ``obs`` of ``cells``, then each modality's columns as ``"mod:col"`` if absent."""
    obs = mdata.obs.iloc[rows].copy()
    for name in names.values():
        mod_obs = mdata.mod[name].obs.loc[cells]
        for col in mod_obs.columns:
            key = f"{name}:{col}"
            if key not in obs and col not in obs:
                obs[key] = mod_obs[col].to_numpy()
    obs.index = pd.Index(cells.astype(str))
    return obs


def read_h5mu(
    path: str | os.PathLike, *, modalities: Mapping[str, str] | None = None
) -> ad.AnnData:
    """Read a muon / MuData ``.h5mu`` with a GEX and an ATAC modality into the contract.

    Parameters
    ----------
    path
        The ``.h5mu`` file (only read).
    modalities
        Which modality holds which measurement, as ``{"GEX": name, "ATAC": name}`` (keys
        in any case); default :data:`H5MU_MODALITIES`, muon's ``{"GEX": "rna", "ATAC": "atac"}``.

    Returns
    -------
    In-memory AnnData of the paired cells (those in both modalities), in the file's global
    cell order, cells x (genes then peaks), with

    - ``obs``: the file's global ``obs`` of those cells, then each modality's ``obs`` columns
      as ``"<modality>:<column>"`` (mudata's naming) unless the global ``obs`` has that
      column already; then the QC columns of :func:`read_10x_h5` where absent;
    - ``obsm``: the global ``obsm`` entries, rows of the paired cells;
    - ``var["feature_types"]`` "GEX" / "ATAC"; ``var["gene_id"]``: the GEX modality's
      ``var["gene_ids"]`` (or ``"gene_id"``; else the name), the peak name for peaks;
      peaks named ``chrN-start-end`` (``chrN:start-end`` is rewritten);
    - ``layers["counts"]``: each modality's ``layers["counts"]``, or its ``X`` with a
      ``UserWarning`` saying that ``X`` is taken to be the raw counts; CSR float32;
    - ``X``: per-modality ``log1p`` of counts per 10,000, CSR float32;
    - ``uns``: the global ``uns``.

    Raises
    ------
    OSError
        The file is not a readable ``.h5mu``.
    MultiomeError
        A modality is missing (names the ones there and how to pass ``modalities``), or no
        cell is in both modalities.
    """
    path = Path(path)
    names = _modality_names(modalities)
    mdata = _read_mudata(path)
    for kind, name in names.items():
        if name not in mdata.mod:
            raise MultiomeError(
                f"{path.name} has no modality {name!r} (expected to hold {kind}); its modalities "
                f"are {list(mdata.mod)}. Name them, e.g. modalities={{'GEX': "
                f"{list(mdata.mod)[0]!r}, 'ATAC': {list(mdata.mod)[-1]!r}}}."
            )
    gex_mod, atac_mod = mdata.mod[names[GEX]], mdata.mod[names[ATAC]]
    paired = mdata.obs_names.isin(gex_mod.obs_names) & mdata.obs_names.isin(atac_mod.obs_names)
    rows = np.flatnonzero(paired)
    cells = mdata.obs_names[rows]
    if len(cells) == 0:
        raise MultiomeError(
            f"No cell of {path.name} is in both {names[GEX]!r} and {names[ATAC]!r}: the pipeline "
            "needs paired measurements (the same cell names in both modalities)."
        )
    if len(cells) < mdata.n_obs:
        logger.info(
            "%s: %d of %d cells are in both modalities; the others are left out",
            path.name,
            len(cells),
            mdata.n_obs,
        )
    parts, vars_ = [], []
    for kind, mod in ((GEX, gex_mod), (ATAC, atac_mod)):
        sub = mod[mod.obs_names.get_indexer(cells)]
        parts.append(to_csr(_modality_counts(sub, names[kind], path)))
        vars_.append(_modality_var(mod, kind))
    var = pd.concat(vars_)
    var.index = ad.utils.make_index_unique(var.index)
    # mudata keeps one boolean mask per modality in the global obsm: not data, left out
    obsm = {k: _take_rows(v, rows) for k, v in mdata.obsm.items() if k not in mdata.mod}
    obs = _merged_obs(mdata, names, cells, rows)
    return _assemble(sp.hstack(parts, format="csr"), var, obs, obsm=obsm, uns=dict(mdata.uns))


# --------------------------------------------------------------------------------------
# Writing the results back as .h5mu
# --------------------------------------------------------------------------------------


def _dense_rows(value, key: str, positions: np.ndarray) -> np.ndarray:
    """Rows ``positions`` of an embedding (``-1``: a cell without one, NaN there)."""
    if sp.issparse(value):
        raise TypeError(
            f"obsm[{key!r}] is sparse; only dense embeddings are added to an existing .h5mu "
            "(pass obsm_keys= to choose them)."
        )
    x = np.asarray(value.to_numpy() if isinstance(value, pd.DataFrame) else value, dtype=float)
    out = np.full((len(positions), *x.shape[1:]), np.nan)
    found = positions >= 0
    out[found] = x[positions[found]]
    return out


def _mudata_from_contract(adata: ad.AnnData, names: dict[str, str], keys: list[str]):
    """A MuData with one modality per feature type and ``adata``'s obs/obsm/uns global."""
    if "feature_types" not in adata.var or (adata.X is None and not adata.layers):
        raise ValueError(
            "adata has no var['feature_types'] or no counts in memory: pass the contract "
            "AnnData read with backed=False, or give source= the .h5mu to add the embeddings to."
        )
    kinds = adata.var["feature_types"].astype(str).to_numpy()
    mods = {}
    for kind, name in names.items():
        part = adata[:, np.flatnonzero(kinds == kind)]
        obs = pd.DataFrame(index=adata.obs_names)
        # anndata 0.13 lists X as layers[None]: only the named layers are passed beside X
        layers = {k: v for k, v in part.layers.items() if k is not None}
        mods[name] = ad.AnnData(X=part.X, obs=obs, var=part.var.copy(), layers=layers)
    with _mudata_quietly() as md:  # setting obs / obsm updates the MuData: quietly too
        mdata = md.MuData(mods)
        mdata.obs = adata.obs.copy()
        for key in keys:
            mdata.obsm[key] = adata.obsm[key]
    mdata.uns.update({k: v for k, v in adata.uns.items() if k != "mmae_backed"})
    return mdata


def _mudata_with_embeddings(adata: ad.AnnData, source: Path, keys: list[str]):
    """``source`` read back, with ``adata.obsm[keys]`` aligned by cell name added globally."""
    mdata = _read_mudata(source)
    positions = pd.Index(adata.obs_names.astype(str)).get_indexer(mdata.obs_names.astype(str))
    if not (positions >= 0).any():
        raise ValueError(
            f"No cell of adata is in {source.name}: the embeddings cannot be placed. Give the "
            ".h5mu the data were read from."
        )
    with _mudata_quietly():
        for key in keys:
            mdata.obsm[key] = _dense_rows(adata.obsm[key], key, positions)
    return mdata


def write_h5mu(
    adata: ad.AnnData,
    path: str | os.PathLike,
    *,
    source: str | os.PathLike | None = None,
    obsm_keys: list[str] | None = None,
    modalities: Mapping[str, str] | None = None,
) -> Path:
    """Write embeddings (and the data) as a MuData ``.h5mu``, atomically.

    Two uses:

    - ``source=None``: ``adata`` is a contract AnnData in memory (e.g. what
      :func:`~mmae_utils.data.load_multiome` returned, with ``obsm["X_mmae"]`` added); the
      file gets one modality per feature type, each with ``adata``'s ``X``, ``layers`` and
      ``var`` of those features, and ``adata``'s ``obs``, ``obsm[obsm_keys]`` and ``uns``
      at the global level;
    - ``source`` an ``.h5mu`` (typically the file the data were read from): the file written
      is ``source`` as it is (all modalities and cells) plus ``adata.obsm[obsm_keys]`` at
      the global level, aligned by cell name; cells that ``adata`` does not have (e.g.
      unpaired ones) get NaN rows. ``adata`` may then hold only ``obs`` and ``obsm``
      (``RUN_DIR/embeddings.h5ad``). ``source`` itself is never modified.

    The file is written to a temporary name next to ``path`` and renamed only when complete.
    It reads with ``mudata.read_h5mu`` (and muon).

    Parameters
    ----------
    adata
        Holds the embeddings in ``obsm`` (and, without ``source``, the data).
    path
        The ``.h5mu`` to write (must differ from ``source``).
    source
        An ``.h5mu`` to add the embeddings to instead of writing ``adata``'s data.
    obsm_keys
        The ``obsm`` entries to write (default: all of ``adata.obsm``).
    modalities
        Without ``source``: names of the modalities written, ``{"GEX": ..., "ATAC": ...}``
        (default :data:`H5MU_MODALITIES`).

    Returns
    -------
    The path written. Its global ``obsm`` holds ``obsm_keys`` (e.g. ``obsm["X_mmae"]``,
    cells x dimensions); without ``source`` also ``mod[<GEX name>]`` and
    ``mod[<ATAC name>]`` with ``X``, ``layers`` and ``var``, and the global ``obs``/``uns``.
    """
    path = Path(path)
    if not path.name.endswith(".h5mu"):
        raise ValueError(f"Expected a .h5mu path, got {path}.")
    keys = list(adata.obsm) if obsm_keys is None else list(obsm_keys)
    missing = [k for k in keys if k not in adata.obsm]
    if missing:
        raise KeyError(f"obsm_keys {missing} are not in adata.obsm ({list(adata.obsm)}).")
    if source is not None:
        source = Path(source)
        if path.resolve() == source.resolve():
            raise ValueError(
                f"path and source are the same file ({path}); the input is never overwritten. "
                "Write to a new name, e.g. x_mmae.h5mu."
            )
        mdata = _mudata_with_embeddings(adata, source, keys)
    else:
        mdata = _mudata_from_contract(adata, _modality_names(modalities), keys)
    with atomic_path(path) as tmp, _mudata_quietly():
        mdata.write_h5mu(tmp)
    return path
