"""Embeddings in ``adata.obsm``: validation, and their kNN graphs and UMAPs cached in ``adata``.

:func:`mmae_utils.evaluation.evaluate` and :func:`mmae_utils.plotting.umaps` both read
embeddings (:func:`resolve_embeddings`) and both need an embedding's kNN graph. The graph
is built once (``sc.pp.neighbors``, as the competition's scripts did, with exact
neighbours at every size: :func:`compute_neighbors`), stored in ``adata``
with a fingerprint of the embedding's content (:func:`store_graph`), and reused while the
content, ``n_neighbors`` and seed are unchanged (:func:`graph_for`); the UMAP coordinates
are cached the same way (:func:`umap_coords`).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ._utils import available_cpus, content_hash, quiet
from .baselines import MAX_DIMS

__all__ = [
    "as_embedding",
    "compute_neighbors",
    "fingerprint",
    "graph_adata",
    "graph_for",
    "neighbors_key",
    "resolve_embeddings",
    "store_graph",
    "umap_coords",
    "umap_key",
]


def neighbors_key(obsm_key: str) -> str:
    """Where :func:`~mmae_utils.evaluation.evaluate` stores the kNN graph of ``adata.obsm[obsm_key]``.

    ``adata.uns[neighbors_key(k)]`` holds the parameters (scanpy's layout), the matrices are
    ``adata.obsp[f"{neighbors_key(k)}_connectivities"]`` and ``..._distances``; pass it as
    ``neighbors_key=`` to scanpy functions such as :func:`scanpy.tl.umap`.
    """
    return f"{obsm_key}_neighbors"


def umap_key(obsm_key: str) -> str:
    """Where :func:`~mmae_utils.plotting.umaps` stores the UMAP of ``adata.obsm[obsm_key]`` (``adata.obsm``)."""
    return f"{obsm_key}_umap"


def fingerprint(x: np.ndarray) -> str:
    """Short content hash of an embedding (to tell whether a stored graph is still valid)."""
    return content_hash(np.asarray(x))


# --------------------------------------------------------------------------------------
# Embeddings
# --------------------------------------------------------------------------------------


def as_embedding(value, n_obs: int, name: str) -> np.ndarray:
    """``value`` as a real cells x dims array (at most ``MAX_DIMS`` dims, finite), or a clear error."""
    if isinstance(value, pd.DataFrame):
        value = value.to_numpy()
    if sp.issparse(value):
        value = value.toarray()
    x = np.asarray(value)
    if x.ndim != 2:
        raise ValueError(f"Embedding {name!r} must be 2-dimensional (cells x dims), got {x.shape}.")
    if x.shape[0] != n_obs:
        raise ValueError(
            f"Embedding {name!r} has {x.shape[0]} rows but adata has {n_obs} cells: "
            "every embedding must hold one row per cell of adata, in adata's order."
        )
    if x.shape[1] < 1:
        raise ValueError(f"Embedding {name!r} has no dimensions.")
    if x.shape[1] > MAX_DIMS:
        raise ValueError(
            f"Embedding {name!r} has {x.shape[1]} dimensions; the joint-embedding task allows "
            f"at most {MAX_DIMS}. Reduce it (e.g. PCA) before evaluating."
        )
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise TypeError(f"Embedding {name!r} must be real-valued, got dtype {x.dtype}.")
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        raise ValueError(
            f"Embedding {name!r} has NaN or infinite values in {int(bad.sum())} of {n_obs} "
            "cells; metrics are undefined for them. Fix the embedding (or drop those cells "
            "from adata) first."
        )
    return x


def resolve_embeddings(adata: ad.AnnData, embeddings) -> dict[str, tuple[str | None, np.ndarray]]:
    """``{display name: (obsm key or None, array)}``, validated.

    ``embeddings`` is ``{display name: obsm key or array}``, a list of obsm keys (used as
    names) or one obsm key.
    """
    if isinstance(embeddings, str):
        embeddings = [embeddings]
    if isinstance(embeddings, Mapping):
        items = list(embeddings.items())
    else:
        items = [(k, k) for k in embeddings]
    if not items:
        raise ValueError("No embeddings given: pass {display name: obsm key} or a list of keys.")
    out = {}
    for name, value in items:
        name = str(name)
        if name in out:
            raise ValueError(f"Embedding name {name!r} is given twice.")
        if isinstance(value, str):
            if value not in adata.obsm:
                raise KeyError(
                    f"Embedding {name!r}: adata.obsm[{value!r}] does not exist. "
                    f"Available obsm keys: {sorted(adata.obsm.keys())}."
                )
            out[name] = (value, as_embedding(adata.obsm[value], adata.n_obs, name))
        else:
            out[name] = (None, as_embedding(value, adata.n_obs, name))
    return out


# --------------------------------------------------------------------------------------
# kNN graphs
# --------------------------------------------------------------------------------------


def graph_adata(obs: pd.DataFrame, x: np.ndarray) -> ad.AnnData:
    """A small AnnData with ``obs`` (copied) and the embedding as ``obsm["X_emb"]``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ad.ImplicitModificationWarning)
        return ad.AnnData(obs=obs.copy(), obsm={"X_emb": x})


def compute_neighbors(g: ad.AnnData, n_neighbors: int, seed: int) -> None:
    """``sc.pp.neighbors`` on ``g.obsm["X_emb"]`` (quietly), in place, with exact neighbours.

    Scanpy finds exact (brute-force) neighbours below 8,192 cells and switches to
    pynndescent's approximate search above, which compiles anew in every process and
    misses some neighbours; here the search is exact at every size, on all the cores (see
    ``benchmarks/README.md``, Evaluation). The connectivities are scanpy's either way.
    """
    import scanpy as sc

    n_jobs = sc.settings.n_jobs
    sc.settings.n_jobs = available_cpus()
    try:
        with quiet():
            sc.pp.neighbors(
                g,
                n_neighbors=n_neighbors,
                use_rep="X_emb",
                random_state=seed,
                transformer="sklearn",
            )
    finally:
        sc.settings.n_jobs = n_jobs


def store_graph(adata, g, obsm_key: str, x: np.ndarray, n_neighbors: int, seed: int) -> None:
    """Store ``g``'s kNN graph in ``adata`` under :func:`neighbors_key` ``(obsm_key)``."""
    key = neighbors_key(obsm_key)
    params = dict(g.uns["neighbors"]["params"])
    params.update(use_rep=obsm_key, n_neighbors=n_neighbors, random_state=seed)
    params["mmae_fingerprint"] = fingerprint(x)
    adata.obsp[f"{key}_connectivities"] = g.obsp["connectivities"]
    adata.obsp[f"{key}_distances"] = g.obsp["distances"]
    adata.uns[key] = {
        "connectivities_key": f"{key}_connectivities",
        "distances_key": f"{key}_distances",
        "params": params,
    }


def _reuse_stored(adata, obsm_key, x, n_neighbors, seed, g) -> bool:
    """Put the graph stored for ``obsm_key`` into ``g`` if it is still valid."""
    stored = adata.uns.get(neighbors_key(obsm_key)) if obsm_key is not None else None
    if stored is None:
        return False
    p = stored.get("params", {})
    valid = (
        p.get("mmae_fingerprint") == fingerprint(x)
        and int(p.get("n_neighbors", -1)) == n_neighbors
        and p.get("random_state") == seed
        and stored["connectivities_key"] in adata.obsp
        and stored["distances_key"] in adata.obsp
    )
    if not valid:
        return False
    g.obsp["connectivities"] = adata.obsp[stored["connectivities_key"]]
    g.obsp["distances"] = adata.obsp[stored["distances_key"]]
    params = {k: v for k, v in p.items() if k != "mmae_fingerprint"}
    params["use_rep"] = "X_emb"
    g.uns["neighbors"] = {
        "connectivities_key": "connectivities",
        "distances_key": "distances",
        "params": params,
    }
    return True


def graph_for(
    adata: ad.AnnData, obsm_key: str | None, x: np.ndarray, n_neighbors: int, seed: int
) -> tuple[ad.AnnData, bool]:
    """A small AnnData holding ``x`` and its kNN graph, and whether the stored graph was reused.

    The graph :func:`~mmae_utils.evaluation.evaluate` stored for ``obsm_key`` is reused if
    it was built from the same content with the same ``n_neighbors`` and ``seed``;
    otherwise it is computed (and not stored).
    """
    g = graph_adata(pd.DataFrame(index=adata.obs_names.astype(str)), x)
    if _reuse_stored(adata, obsm_key, x, n_neighbors, seed, g):
        return g, True
    compute_neighbors(g, n_neighbors, seed)
    return g, False


# --------------------------------------------------------------------------------------
# UMAPs
# --------------------------------------------------------------------------------------


def umap_coords(
    adata: ad.AnnData,
    obsm_key: str | None,
    x: np.ndarray,
    *,
    n_neighbors: int,
    seed: int,
    recompute: bool,
    store: bool,
) -> np.ndarray:
    """UMAP coordinates (cells x 2, float32) of ``x``: cached ones if still valid, else computed.

    Cached in ``adata.obsm[umap_key(obsm_key)]`` with ``adata.uns["mmae_umap"][obsm_key]``
    (embedding fingerprint, ``n_neighbors``, ``seed``) when ``store`` (obsm keys only,
    ``adata`` not a view); ``recompute`` ignores the cache.
    """
    import scanpy as sc

    record = {"fingerprint": fingerprint(x), "n_neighbors": n_neighbors, "seed": seed}
    if obsm_key is not None and not recompute:
        done = adata.uns.get("mmae_umap", {}).get(obsm_key)
        if done is not None and dict(done) == record and umap_key(obsm_key) in adata.obsm:
            return np.asarray(adata.obsm[umap_key(obsm_key)])
    g, _ = graph_for(adata, obsm_key, x, n_neighbors, seed)
    with quiet():
        sc.tl.umap(g, random_state=seed)
    coords = np.asarray(g.obsm["X_umap"], dtype=np.float32)
    if store and obsm_key is not None and not adata.is_view:
        adata.obsm[umap_key(obsm_key)] = coords
        adata.uns.setdefault("mmae_umap", {})[obsm_key] = record
    return coords
