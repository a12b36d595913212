"""Datasets: the built-in synthetic BMMC multiome data and the real GEO file.

The NeurIPS 2021 multiome bone-marrow file (GEO GSE194122) is 7.8 GB and cannot be
assumed to be present, so the tutorial runs by default on :func:`demo`, a dataset drawn
from :func:`synthetic_bmmc` (the simulator of :mod:`mmae_utils.sim`, re-exported here with
its constants): it follows the schema of the GEO file exactly and reaches its full size in
bounded memory by streaming to disk. :func:`fetch_bmmc` downloads and verifies the real
file, :func:`load_dataset` reads whichever a notebook names, and :func:`save_input` /
:func:`load_input` record it in a run folder for the next notebooks.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import warnings
from collections.abc import Mapping
from pathlib import Path

import anndata as ad

from ._utils import atomic_path, logger
from .data import load_multiome, write_h5ad
from .sim import (
    ABUNDANT_MARKERS,
    BATCH_COUNTS,
    CELL_TYPE_COUNTS,
    CHROM_SIZES,
    CYCLING,
    HOUSEKEEPING,
    LINEAGE,
    MARKERS,
    MODALITY_BIAS,
    MT_GENES,
    REAL_N_CELLS,
    REAL_N_GENES,
    REAL_N_PEAKS,
    SUBGROUP,
    SUBGROUP_BIAS,
    TRAJECTORIES,
    Mechanisms,
    cell_cycle_genes,
    synthetic_bmmc,
)

__all__ = [
    # the simulator (re-exported from mmae_utils.sim)
    "ABUNDANT_MARKERS",
    "BATCH_COUNTS",
    "CELL_TYPE_COUNTS",
    "CHROM_SIZES",
    "CYCLING",
    "HOUSEKEEPING",
    "LINEAGE",
    "MARKERS",
    "MODALITY_BIAS",
    "MT_GENES",
    "REAL_N_CELLS",
    "REAL_N_GENES",
    "REAL_N_PEAKS",
    "SUBGROUP",
    "SUBGROUP_BIAS",
    "TRAJECTORIES",
    "Mechanisms",
    "cell_cycle_genes",
    "synthetic_bmmc",
    # development and evaluation draws
    "DEVELOPMENT_DRAWS",
    "DEVELOPMENT_SEEDS",
    "development_draw",
    # the demo and the real file
    "BMMC_FILENAME",
    "BMMC_SHA256",
    "BMMC_URL",
    "default_cache_dir",
    "demo",
    "fetch_bmmc",
    "load_dataset",
    "load_input",
    "save_embeddings",
    "save_input",
]


#: The simulator draws on which configurations may be chosen (the simulator's calibration,
#: the model's defaults, ablations): name -> :func:`synthetic_bmmc` arguments. Every other
#: draw, :func:`demo` (seed 0) and any seed not in :data:`DEVELOPMENT_SEEDS`, is an
#: evaluation draw: it is only ever scored, never used to choose (``benchmarks/README.md``).
DEVELOPMENT_DRAWS: dict[str, dict] = {
    "dev-a": {"n_cells": 5000, "n_genes": 4000, "n_peaks": 12000, "seed": 101},
    "dev-b": {"n_cells": 5000, "n_genes": 4000, "n_peaks": 12000, "seed": 102},
    "dev-c": {
        "n_cells": 5000, "n_genes": 4000, "n_peaks": 12000, "seed": 103,
        "batch_effect": 1.5, "atac_density": 0.7,
    },
    "dev-full": {"n_cells": 69249, "n_genes": 4000, "n_peaks": 12000, "seed": 104},
}  # fmt: skip

#: The seeds of :data:`DEVELOPMENT_DRAWS`: a draw with another seed is an evaluation draw.
DEVELOPMENT_SEEDS: frozenset[int] = frozenset(d["seed"] for d in DEVELOPMENT_DRAWS.values())


def development_draw(name: str, **overrides) -> ad.AnnData:
    """The development draw ``name`` of :data:`DEVELOPMENT_DRAWS` (see there).

    ``overrides`` go to :func:`synthetic_bmmc` (e.g. ``path=`` to stream the full-size
    draw to disk, ``mechanisms=`` while calibrating); the seed cannot be overridden.
    """
    if name not in DEVELOPMENT_DRAWS:
        raise ValueError(
            f"Unknown development draw {name!r}; choose from {list(DEVELOPMENT_DRAWS)}."
        )
    if "seed" in overrides:
        raise ValueError("A development draw's seed is fixed; another seed is an evaluation draw.")
    return synthetic_bmmc(**{**DEVELOPMENT_DRAWS[name], **overrides})


def demo(*, seed: int = 0) -> ad.AnnData:
    """The built-in demo dataset: 5,000 cells x (4,000 genes + 12,000 peaks).

    A :func:`synthetic_bmmc` draw small enough that the whole tutorial runs in minutes on a
    laptop, with more genes and peaks than the 2,500 + 5,000 that feature selection keeps.

    Parameters
    ----------
    seed
        Random seed (0 is what the tutorial and the tests use).

    Returns
    -------
    An in-memory :class:`~anndata.AnnData` following the GSE194122 schema (see
    :func:`synthetic_bmmc`).
    """
    return synthetic_bmmc(5000, 4000, 12000, seed=seed)


# --------------------------------------------------------------------------------------
# The real file
# --------------------------------------------------------------------------------------

#: Where GEO serves the processed multiome file.
BMMC_URL = (
    "https://ftp.ncbi.nlm.nih.gov/geo/series/GSE194nnn/GSE194122/suppl/"
    "GSE194122_openproblems_neurips2021_multiome_BMMC_processed.h5ad.gz"
)
BMMC_FILENAME = "GSE194122_openproblems_neurips2021_multiome_BMMC_processed.h5ad.gz"
#: SHA-256 of the ``.h5ad.gz`` as served by GEO. ``None`` means "not pinned yet": the first
#: download is accepted and its hash is logged so that you can pin it (pass it as
#: ``sha256=`` or set the environment variable ``MMAE_BMMC_SHA256``).
BMMC_SHA256: str | None = None


def default_cache_dir() -> Path:
    """``$MMAE_CACHE`` if set, else pooch's OS cache folder for ``mmae``."""
    import pooch

    env = os.environ.get("MMAE_CACHE")
    return Path(env) if env else Path(pooch.os_cache("mmae"))


def fetch_bmmc(
    cache_dir: str | os.PathLike | None = None,
    *,
    url: str = BMMC_URL,
    sha256: str | None = None,
    progress: bool = True,
) -> Path:
    """Download the real GEO file, verify it and decompress it (once; then cached).

    The download goes to a temporary name in ``cache_dir`` and only becomes
    ``GSE194122_...h5ad.gz`` when it is complete and its SHA-256 matches; decompression
    likewise writes a temporary file renamed on success. A failed or corrupted download
    leaves no half-written file behind.

    How the hash is pinned: pass ``sha256=...``, or set ``MMAE_BMMC_SHA256``, or set
    :data:`BMMC_SHA256`. With none of them the file is accepted and its SHA-256 is logged
    (and written next to it as ``.sha256``) so that you can pin it for the next runs; a later
    run with a pinned hash that does not match fails.

    Parameters
    ----------
    cache_dir
        Folder for the download (default :func:`default_cache_dir`).
    url
        Source; the GEO address by default (tests point this at a local server).
    sha256
        Expected SHA-256 of the ``.gz`` file.
    progress
        Show a download progress bar.

    Returns
    -------
    Path of the decompressed ``.h5ad`` file.
    """
    import pooch

    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    expected = sha256 or os.environ.get("MMAE_BMMC_SHA256") or BMMC_SHA256
    fname = Path(url.split("?")[0]).name or BMMC_FILENAME
    if not fname.endswith(".gz"):
        raise ValueError(f"Expected a .h5ad.gz address, got {url!r}.")
    gz_path = cache / fname
    h5ad_path = cache / fname[: -len(".gz")]
    if h5ad_path.exists() and (expected is None or _sha_note_matches(gz_path, expected)):
        logger.info("Using cached %s", h5ad_path)
        return h5ad_path
    known_hash = f"sha256:{expected.lower()}" if expected else None
    try:
        downloaded = pooch.retrieve(
            url,
            known_hash=known_hash,
            fname=fname,
            path=cache,
            progressbar=progress,
        )
    except ValueError as err:  # pooch's hash mismatch
        if gz_path.exists():
            gz_path.unlink()
        raise OSError(
            f"The download of {url} is corrupted or is not the expected file: {err} "
            "Nothing was kept. Retry; if it keeps failing, check the pinned SHA-256 "
            "(argument sha256, env MMAE_BMMC_SHA256)."
        ) from err
    downloaded = Path(downloaded)
    digest = pooch.file_hash(str(downloaded), alg="sha256")
    if expected is None:
        logger.warning(
            "No SHA-256 pinned for %s; the downloaded file has sha256=%s. Pin it with "
            "fetch_bmmc(sha256=...) or MMAE_BMMC_SHA256 to verify future downloads.",
            downloaded.name,
            digest,
        )
    downloaded.with_suffix(downloaded.suffix + ".sha256").write_text(digest + "\n")
    try:
        with atomic_path(h5ad_path) as tmp:
            with gzip.open(downloaded, "rb") as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, length=1 << 22)
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        downloaded.unlink(missing_ok=True)
        raise OSError(
            f"{downloaded.name} is not a valid gzip file ({err}); it was removed. Download again."
        ) from err
    return h5ad_path


def _sha_note_matches(gz_path: Path, expected: str) -> bool:
    note = gz_path.with_suffix(gz_path.suffix + ".sha256")
    return note.exists() and note.read_text().strip().lower() == expected.lower()


def _auto_backed(path: Path) -> bool:
    """Backed reading pays off when the file would take a large share of the memory."""
    import psutil

    size = path.stat().st_size * (3 if path.suffix == ".gz" else 1)  # .h5ad.gz: about 1/3
    return size > 0.2 * psutil.virtual_memory().total


def load_dataset(
    data: str | os.PathLike = "demo",
    *,
    seed: int = 0,
    backed: bool | str = "auto",
    cache_dir: str | os.PathLike | None = None,
    modalities: Mapping[str, str] | None = None,
) -> ad.AnnData:
    """The dataset a notebook parameter ``DATA`` names, read and validated.

    Parameters
    ----------
    data
        ``"demo"`` (:func:`demo`), ``"bmmc"`` (:func:`fetch_bmmc`, then read) or the path of
        a multiome file that :func:`mmae_utils.data.load_multiome` reads: ``.h5ad`` /
        ``.h5ad.gz`` in the GSE194122 schema, a 10x Cell Ranger ARC ``.h5`` or a ``.h5mu``.
    seed
        Seed of the demo data.
    backed
        ``True``: keep the counts on disk (see :func:`mmae_utils.data.load_multiome`);
        ``False``: read into memory; ``"auto"``: backed when the file is larger than a
        fifth of this machine's memory (the real file, 7.8 GB, on a laptop or a 24 GB
        server; never the demo, which exists only in memory). ``.h5`` and ``.h5mu`` files
        are always read into memory (``"auto"`` never backs them; ``True`` raises).
    cache_dir
        Download folder for ``"bmmc"``.
    modalities
        For a ``.h5mu``: ``{"GEX": name, "ATAC": name}`` (default muon's ``"rna"``/``"atac"``).

    Returns
    -------
    The AnnData.
    """
    if backed not in (True, False, "auto"):
        raise ValueError(f"backed must be True, False or 'auto', got {backed!r}.")
    if str(data) == "demo":
        return demo(seed=seed)
    path = fetch_bmmc(cache_dir) if str(data) == "bmmc" else Path(data).expanduser()
    if backed == "auto":
        backed = path.exists() and _is_h5ad(path) and _auto_backed(path)
        if backed:
            logger.info("%s is large for this machine's memory: reading it backed", path.name)
    return load_multiome(path, backed=bool(backed), modalities=modalities)


def _is_h5ad(path: Path) -> bool:
    """Whether ``path`` can be read backed (``.h5ad``/``.h5ad.gz``; not ``.h5``/``.h5mu``)."""
    return path.name.lower().endswith((".h5ad", ".h5ad.gz"))


# --------------------------------------------------------------------------------------
# Run-folder bookkeeping: which data a run uses (notebook 01 records it, the others read it)
# --------------------------------------------------------------------------------------


def save_input(adata: ad.AnnData, run_dir: str | os.PathLike, *, source: str) -> Path:
    """Record which data a run uses, for the next notebooks (:func:`load_input`).

    A ``.h5ad`` the user named (``source`` a path, or the cached GEO file) is referenced,
    not copied; data that exist only in memory (the built-in demo) and data converted from
    another format (a 10x ``.h5``, a ``.h5mu``) are written to ``RUN_DIR/input.h5ad``, so
    that the next notebooks read the contract AnnData without converting again.

    Parameters
    ----------
    adata
        The data the run uses (as :func:`load_dataset` returned it; backed or in memory).
    run_dir
        The run folder (created if needed).
    source
        What the notebook parameter ``DATA`` named: ``"demo"``, ``"bmmc"`` or a path.

    Returns
    -------
    Path of ``RUN_DIR/input.json`` (and ``RUN_DIR/input.h5ad`` for in-memory data).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    user_file = source not in ("demo",) and Path(str(source)).exists()
    if "mmae_backed" in adata.uns:
        record = {"source": source, "path": adata.uns["mmae_backed"]["path"], "backed": True}
    elif adata.filename is None and user_file and not _is_h5ad(Path(str(source))):
        path = write_h5ad(adata, run_dir / "input.h5ad")  # converted from .h5 / .h5mu
        record = {"source": source, "path": str(path.resolve()), "backed": False}
    elif adata.filename is not None or user_file:
        path = adata.filename or Path(str(source))
        record = {"source": source, "path": str(Path(path).resolve()), "backed": False}
    elif source == "bmmc":
        record = {"source": source, "path": str(fetch_bmmc()), "backed": False}
    else:
        path = write_h5ad(adata, run_dir / "input.h5ad")
        record = {"source": source, "path": str(path.resolve()), "backed": False}
    out = run_dir / "input.json"
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(record, indent=2))
    return out


def load_input(run_dir: str | os.PathLike, *, backed: bool | None = None) -> ad.AnnData:
    """Read the data recorded by :func:`save_input` in ``run_dir``.

    Parameters
    ----------
    run_dir
        The run folder that notebook 01 wrote ``input.json`` to.
    backed
        Keep the counts on disk; ``None`` reads the data as they were recorded.

    Returns
    -------
    The AnnData (validated again, as :func:`~mmae_utils.data.load_multiome` does; its
    warning about features with no count, shown by notebook 01, is not repeated).
    """
    record_path = Path(run_dir) / "input.json"
    if not record_path.exists():
        raise FileNotFoundError(
            f"{record_path} does not exist: run notebook 01_load_data with RUN_DIR={str(run_dir)!r} first."
        )
    record = json.loads(record_path.read_text())
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*are zero in every cell", category=UserWarning)
        return load_multiome(record["path"], backed=record["backed"] if backed is None else backed)


def save_embeddings(
    adata: ad.AnnData, run_dir: str | os.PathLike, *, obsm_keys: list[str]
) -> dict[str, Path]:
    """Write a run's embeddings back into the ecosystem, as AnnData and as MuData.

    ``embeddings.h5ad`` holds ``adata.obs`` and ``adata.obsm[obsm_keys]``. For
    ``embeddings.h5mu``: when the run's data came from a ``.h5mu`` (``input.json``), it is
    that file, all modalities and cells, with the embeddings added to its global ``obsm``
    (the input itself is never modified); otherwise it is ``adata``'s data, one modality
    per feature type (``rna``, ``atac``), with its ``obs`` and the embeddings. Both are
    written atomically (:func:`mmae_utils.readers.write_h5mu`).

    Parameters
    ----------
    adata
        The selected features (notebook 05's ``selected``) with the embeddings in ``obsm``.
    run_dir
        The run folder (its ``input.json`` says where the data came from).
    obsm_keys
        The embeddings to write, e.g. ``["X_mmae", "X_pca_concat"]``.

    Returns
    -------
    ``{"h5ad": path, "h5mu": path}``: ``RUN_DIR/embeddings.h5ad`` and
    ``RUN_DIR/embeddings.h5mu``, each with ``obsm[key]`` for every key of ``obsm_keys``.
    """
    from .readers import write_h5mu

    run_dir, keys = Path(run_dir), list(obsm_keys)
    missing = [k for k in keys if k not in adata.obsm]
    if missing:
        raise KeyError(f"obsm has no {missing} (it has {list(adata.obsm)}).")
    small = ad.AnnData(obs=adata.obs, obsm={k: adata.obsm[k] for k in keys})
    paths = {"h5ad": write_h5ad(small, run_dir / "embeddings.h5ad")}
    record_path = run_dir / "input.json"
    source = json.loads(record_path.read_text())["source"] if record_path.exists() else None
    h5mu = run_dir / "embeddings.h5mu"
    if source is not None and str(source).lower().endswith(".h5mu") and Path(source).exists():
        paths["h5mu"] = write_h5mu(small, h5mu, source=source, obsm_keys=keys)
    else:
        paths["h5mu"] = write_h5mu(adata, h5mu, obsm_keys=keys)
    return paths
