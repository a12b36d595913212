"""benchmarks/peers/score_peer.py reads a peer's files and matches them to the run's cells
(the peer itself, e.g. MultiVI, runs in its own environment and is not tested here)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def score_peer():
    path = ROOT / "benchmarks/peers/score_peer.py"
    spec = importlib.util.spec_from_file_location("score_peer", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CELLS = pd.Index([f"c{i}" for i in range(6)])


def test_cells_in_another_order_are_reordered(score_peer):
    x = np.arange(12, dtype=float).reshape(6, 2)
    order = [3, 0, 5, 1, 4, 2]
    out = score_peer.align(CELLS[order], x[order], CELLS, what="peer")
    np.testing.assert_array_equal(out, x)
    assert out.dtype == np.float32


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (["c0", "c1", "c2", "c3", "c4", "x9"], "1 missing .*'c5'.*1 not in the run .*'x9'"),
        (["c0", "c1", "c2", "c3", "c4"], r"\(5, 2\) array for 5 cell names|differ"),
        (["c0", "c1", "c2", "c3", "c4", "c4"], "repeated cell names"),
    ],
)
def test_other_cells_are_an_error(score_peer, names, message):
    x = np.zeros((len(names), 2))
    with pytest.raises(score_peer.AlignmentError, match=message):
        score_peer.align(names, x, CELLS, what="peer")


def test_files_give_their_seed_and_must_match_the_cells(score_peer, tmp_path):
    x = np.random.default_rng(0).normal(size=(6, 3)).astype(np.float32)
    np.savez(tmp_path / "peer_seed4.npz", obs_names=np.asarray(CELLS, dtype=str), latent=x)
    np.savez(tmp_path / "other.npz", obs_names=np.asarray(CELLS, dtype=str), latent=x, seed=7)
    peer = score_peer.load_peer([tmp_path / "peer_seed4.npz", tmp_path / "other.npz"], CELLS)
    assert list(peer) == [4, 7]
    np.testing.assert_array_equal(peer[4], x)
    np.savez(
        tmp_path / "bad_seed1.npz", obs_names=np.asarray(CELLS[::-1][:5], dtype=str), latent=x[:5]
    )
    with pytest.raises(score_peer.AlignmentError, match="bad_seed1.npz.*1 missing"):
        score_peer.load_peer([tmp_path / "bad_seed1.npz"], CELLS)
    import anndata as ad

    run = tmp_path / "run"
    run.mkdir()
    ad.AnnData(np.zeros((6, 1), dtype=np.float32), obs=pd.DataFrame(index=CELLS)).write_h5ad(
        run / "selected.h5ad"
    )
    args = [str(run), str(tmp_path / "bad_seed1.npz"), "--name", "p", "--out", str(run / "p.md")]
    assert score_peer.main(args) == 2
    assert not (run / "p.md").exists()
