"""fnn.fit on 2 MPI ranks equals fnn.fit in one process to 1e-12 in float64 (with synchronized
BatchNorm, and with gradient accumulation); evaluation sums across ranks; rank 0 alone prints and
writes the checkpoint a 2-rank run resumes from. Skips without MPI, except in CI (tests/mpirun.py)."""

from pathlib import Path

import loop_worker
import numpy as np
import pytest
from mpirun import check, mpirun

import fnn

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("fit-mpi")
    stdout = check(mpirun(2, HERE / "loop_worker.py", str(out)))
    return [fnn.load(out / f"fit-rank{r}.fnn") for r in range(2)], stdout


def assert_close(got, want):
    fnn.tree.check_same_structure(got, want, shapes=True)
    for (path, g), w in zip(fnn.tree.flatten(got)[0], fnn.tree.leaves(want)):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12, err_msg=fnn.tree.path_str(path))


def test_two_ranks_fit_like_one_process(ranks):
    (rank0, rank1), _ = ranks
    for a, b in zip(fnn.tree.leaves(rank0), fnn.tree.leaves(rank1)):  # every rank holds the same bits
        np.testing.assert_array_equal(a, b)
    one = fnn.distributed.World()
    bn = loop_worker.fit(one, True, progress=False)
    assert_close(rank0["bn"], loop_worker.result(bn))
    assert_close(rank0["plain"], loop_worker.result(loop_worker.fit(one, False, progress=False)))
    assert_close(rank0["eval"], loop_worker.evaluation(one, bn))
    for a, b in zip(fnn.tree.leaves(rank0["resumed"]), fnn.tree.leaves(rank0["bn"])):  # resumed on 2 ranks: bitwise
        np.testing.assert_array_equal(a, b)


def test_only_rank_0_prints(ranks):
    _, stdout = ranks
    lines = stdout.splitlines()
    assert [line.split("  ")[0] for line in lines if line.startswith("epoch")] == ["epoch 1/2", "epoch 2/2"]
