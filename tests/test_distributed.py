"""fnn.distributed: the single-process world in this process, and real MPI jobs under ``mpiexec``.

The MPI tests launch ``tests/mpi_worker.py`` on 2 to 4 ranks and compare what the
ranks computed with the same training in this process (see tests/mpirun.py for
when they skip: never in CI).
"""

from __future__ import annotations

import subprocess
import sys
import time
from functools import cache
from pathlib import Path
from typing import Any

import mpi_worker
import numpy as np
import pytest
from mpirun import check
from mpirun import mpirun as launch

import fnn
from fnn import distributed as dist
from fnn.layers import BatchNorm, Dense, Dropout

HERE = Path(__file__).resolve().parent


# --- the single-process world and a stand-in communicator -------------------------------------

class FakeComm:
    """A communicator for rank ``rank`` of ``size`` whose other ranks hold the same data as this
    one: enough to test sharding, packing and call counts without MPI."""

    def __init__(self, rank: int = 0, size: int = 2) -> None:
        self.rank, self.size, self.calls = rank, size, []

    def Get_rank(self) -> int:  # noqa: N802 (mpi4py's names)
        return self.rank

    def Get_size(self) -> int:  # noqa: N802
        return self.size

    def Allreduce(self, _inplace: Any, buf: np.ndarray) -> None:  # noqa: N802
        self.calls.append(("Allreduce", buf.dtype, buf.size))
        buf *= self.size

    def Allgather(self, x: np.ndarray, out: np.ndarray) -> None:  # noqa: N802
        self.calls.append(("Allgather", x.dtype, x.size))
        out[...] = x

    def Bcast(self, buf: np.ndarray, root: int = 0) -> None:  # noqa: N802
        self.calls.append(("Bcast", buf.dtype, buf.size))


def test_world_outside_a_launcher_is_one_process(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in dist.LAUNCHER_VARS + ("FNN_MPI",):
        monkeypatch.delenv(var, raising=False)
    w = dist.world()
    assert (w.rank, w.size, w.is_root, w.comm) == (0, 1, True, None)
    assert repr(w) == "World(rank=0, size=1)"


def test_world_under_a_launcher_without_mpi4py_refuses_to_train_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    monkeypatch.delenv("FNN_MPI", raising=False)
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # import mpi4py now raises ImportError
    with pytest.raises(dist.DistributedError, match="mpi4py is not installed"):
        dist.world()
    monkeypatch.setenv("FNN_MPI", "0")
    assert dist.world().size == 1


def test_world_takes_a_communicator_and_rejects_anything_else() -> None:
    w = dist.world(FakeComm(rank=2, size=3))
    assert (w.rank, w.size, w.is_root) == (2, 3, False)
    with pytest.raises(TypeError, match="comm must be an mpi4py communicator, got str"):
        dist.world("COMM_WORLD")


def test_print_is_rank_0_only(capsys: pytest.CaptureFixture[str]) -> None:
    dist.World(FakeComm(rank=1)).print("from rank 1")
    dist.World(FakeComm(rank=0)).print("from rank 0")
    assert capsys.readouterr().out == "from rank 0\n"


@pytest.mark.parametrize("n", [0, 1, 5, 29])
@pytest.mark.parametrize("size", [1, 2, 3, 4, 7])
def test_shards_are_disjoint_ordered_and_cover_the_global_batch(n: int, size: int) -> None:
    x, y = np.arange(n * 2.0).reshape(n, 2), np.arange(n)
    shards = [dist.shard(dist.World(FakeComm(r, size)), (x, y)) for r in range(size)]
    assert np.array_equal(np.concatenate([s.arrays[0] for s in shards]), x)
    assert np.array_equal(np.concatenate([s.arrays[1] for s in shards]), y)
    assert [s.start for s in shards] == sorted(s.start for s in shards)
    assert {s.total for s in shards} == {n}
    assert max(len(s.arrays[1]) for s in shards) - min(len(s.arrays[1]) for s in shards) <= 1


@pytest.mark.parametrize("size", [1, 2, 3])
def test_batches_give_each_rank_its_part_of_the_single_process_batches(size: int) -> None:
    x, y = np.arange(23.0)[:, None], np.arange(23)
    key = fnn.random.key(5)
    single = list(fnn.data.batches(key, (x, y), 8))
    per_rank = [list(dist.batches(dist.World(FakeComm(r, size)), key, (x, y), 8)) for r in range(size)]
    assert all(len(b) == len(single) for b in per_rank)
    for step, (xs, ys) in enumerate(single):
        assert np.array_equal(np.concatenate([per_rank[r][step].arrays[0] for r in range(size)]), xs)
        assert np.array_equal(np.concatenate([per_rank[r][step].arrays[1] for r in range(size)]), ys)
        assert {per_rank[r][step].total for r in range(size)} == {len(ys)}


def test_batches_check_their_arguments_when_called() -> None:
    w = dist.World()
    with pytest.raises(ValueError, match="^batches: batch_size must be >= 1, got 0"):
        dist.batches(w, fnn.random.key(0), (np.ones(3),), 0)
    with pytest.raises(TypeError, match="^batches: batch_size must be an int, got float 2.0"):
        dist.batches(w, fnn.random.key(0), (np.ones(3),), 2.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="^batches: shuffle must be True or False, got str 'no'"):
        dist.batches(w, fnn.random.key(0), (np.ones(3),), 2, shuffle="no")  # type: ignore[arg-type]
    assert [s.total for s in dist.batches(w, None, (np.ones(3),), np.int64(2), shuffle=np.False_)] == [2, 1]
    with pytest.raises(ValueError, match="shuffle=True needs a key"):
        dist.batches(w, None, (np.ones(3),), 2)
    with pytest.raises(TypeError, match=r"world must be an fnn.distributed.World \(.*\), got int"):
        dist.batches(0, None, (np.ones(3),), 2, shuffle=False)  # type: ignore[arg-type]


def test_shard_rejects_a_bare_array_and_unaligned_arrays() -> None:
    with pytest.raises(TypeError, match="fnn.distributed.shard: arrays must be a tuple of arrays such as"):
        dist.shard(dist.World(), np.ones(3))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"share their first axis length, got lengths \[3, 2\]"):
        dist.shard(dist.World(), (np.ones(3), np.ones(2)))
    with pytest.raises(ValueError, match=r"fnn.distributed.shard: needs at least one array"):
        dist.shard(dist.World(), ())


def mixed_tree() -> dict[str, Any]:
    return {"a": {"w": np.arange(6.0).reshape(2, 3), "b": np.ones(3)},
            "c": np.arange(4, dtype=np.float32), "d": [np.full((2, 2), 2.0), np.array(3.0)],
            "n": np.array([5], np.int64)}


def test_allreduce_makes_one_call_per_dtype_and_keeps_structure_and_dtypes() -> None:
    pytest.importorskip("mpi4py")
    comm = FakeComm(size=3)
    tree = mixed_tree()
    out = dist.allreduce(dist.World(comm), tree)
    fnn.tree.check_same_structure(out, tree, shapes=True)
    for got, want in zip(fnn.tree.leaves(out), fnn.tree.leaves(tree)):
        assert got.dtype == want.dtype and np.array_equal(got, 3 * want)
    reduces = [c for c in comm.calls if c[0] == "Allreduce"]
    assert sorted((str(d), n) for _, d, n in reduces) == [("float32", 4), ("float64", 6 + 3 + 4 + 1), ("int64", 1)]
    assert [c[0] for c in comm.calls].count("Allgather") == 1  # the structure check, one small gather
    assert np.array_equal(tree["a"]["w"], np.arange(6.0).reshape(2, 3))  # the input is untouched


def test_allreduce_mean_and_the_deterministic_sum() -> None:
    pytest.importorskip("mpi4py")
    tree = {"g": np.array([1.5, -2.0]), "h": np.ones((2, 2), np.float32)}
    mean = dist.allreduce(dist.World(FakeComm(size=4)), tree, mean=True)
    assert np.array_equal(mean["g"], tree["g"]) and mean["h"].dtype == np.float32
    comm = FakeComm(size=4)
    summed = dist.allreduce(dist.World(comm), tree, deterministic=True)
    assert np.array_equal(summed["g"], 4 * tree["g"])
    assert "Allreduce" not in [c[0] for c in comm.calls]


def test_broadcast_packs_by_dtype_and_returns_a_copy() -> None:
    comm = FakeComm(rank=1, size=2)
    tree = mixed_tree()
    out = dist.broadcast(dist.World(comm), tree)
    assert sorted(str(d) for name, d, _ in comm.calls if name == "Bcast") == ["float32", "float64", "int64"]
    assert fnn.tree.allclose(out, tree) and out["c"] is not tree["c"]
    single = dist.broadcast(dist.World(), tree)
    assert fnn.tree.allclose(single, tree) and single["c"] is not tree["c"]


def test_single_process_collectives_are_identities() -> None:
    w = dist.World()
    tree = mixed_tree()
    assert dist.allreduce(w, tree) is tree
    assert dist.reduce_metrics(w, {"loss": 2.5, "correct": np.int64(3)}) == {"loss": 2.5, "correct": 3.0}
    assert dist.allgather(w, np.arange(3)).tolist() == [[0, 1, 2]]
    assert dist.rank_key(w, fnn.random.key(1)) is not None


def test_collectives_reject_what_they_cannot_reduce() -> None:
    w = dist.World()
    with pytest.raises(TypeError, match=r"leaf \['b'\] must be a numpy array, got float"):
        dist.allreduce(w, {"a": np.ones(2), "b": 1.0})
    with pytest.raises(TypeError, match=r"leaf \['m'\] has dtype bool; only integer and float"):
        dist.allreduce(w, {"m": np.ones(2, bool)})
    with pytest.raises(TypeError, match="mean=True needs float leaves"):
        dist.allreduce(w, {"n": np.ones(2, np.int64)}, mean=True)
    with pytest.raises(TypeError, match="world must be an fnn.distributed.World"):
        dist.allreduce(None, {"a": np.ones(2)})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^fnn.distributed.broadcast: root must be <= 0, got 1"):
        dist.broadcast(w, {"a": np.ones(2)}, root=1)
    with pytest.raises(TypeError, match=r"metrics\['loss'\] must be a number, got 'low'"):
        dist.reduce_metrics(w, {"loss": "low"})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="x must be a numpy array, got list"):
        dist.allgather(w, [1, 2])  # type: ignore[arg-type]


@pytest.mark.parametrize("root, error, match", [
    (3, ValueError, "root must be <= 2, got 3"),
    (-1, ValueError, "root must be >= 0, got -1"),
    (True, TypeError, "root must be an int, got bool True"),
    (1.0, TypeError, "root must be an int, got float 1.0"),
    ("0", TypeError, "root must be an int, got str '0'"),
])
def test_broadcast_checks_its_root_against_the_world(root: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=f"^fnn.distributed.broadcast: {match}"):
        dist.broadcast(dist.World(FakeComm(0, 3)), {"a": np.ones(2)}, root=root)


def test_broadcast_takes_a_numpy_integer_root() -> None:
    comm = FakeComm(1, 3)
    out = dist.broadcast(dist.World(comm), {"a": np.ones(2)}, root=np.int64(2))
    assert out["a"].tolist() == [1.0, 1.0] and [c[0] for c in comm.calls] == ["Allgather", "Bcast"]


@pytest.mark.parametrize("option", ["mean", "deterministic"])
@pytest.mark.parametrize("bad, got", [("True", "str 'True'"), (1, "int 1"), (None, "NoneType None")])
def test_allreduce_bool_options_refuse_anything_but_a_bool(option: str, bad: Any, got: str) -> None:
    with pytest.raises(TypeError, match=f"^fnn.distributed.allreduce: {option} must be True or False, got {got}"):
        dist.allreduce(dist.World(), {"a": np.ones(2)}, **{option: bad})
    tree = {"a": np.ones(2)}
    assert dist.allreduce(dist.World(), tree, **{option: np.True_})["a"].tolist() == [1.0, 1.0]


def test_reduce_metrics_refuses_a_bool_and_takes_a_nan() -> None:
    with pytest.raises(TypeError, match=r"metrics\['ok'\] must be a number, got True"):
        dist.reduce_metrics(dist.World(), {"ok": True})
    assert np.isnan(dist.reduce_metrics(dist.World(), {"loss": float("nan")})["loss"])


def test_rank_key_differs_between_ranks_and_is_the_key_itself_alone() -> None:
    k = fnn.random.key(0)
    keys = [dist.rank_key(dist.World(FakeComm(r, 3)), k) for r in range(3)]
    assert len({kk.tobytes() for kk in keys}) == 3
    assert dist.rank_key(dist.World(), k) is k


def test_layers_take_the_world_option_and_reject_anything_else() -> None:
    net = fnn.serial(Dense(3), BatchNorm(), Dropout(0.5))
    params = net.init(fnn.random.key(0), (4,), np.float64)
    x = fnn.random.normal(fnn.random.key(1), (6, 4), np.float64)
    opts = {"train": True, "key": fnn.random.key(2)}
    y_alone, vjp_alone = net.apply(params, x, **opts)
    y_world, vjp_world = net.apply(params, x, **opts, world=dist.World())
    assert np.array_equal(y_alone, y_world)  # a world of one process changes nothing, bitwise
    dy = np.ones_like(y_alone)
    assert fnn.tree.allclose(vjp_alone(dy), vjp_world(dy), rtol=0, atol=0)
    with pytest.raises(TypeError, match=r"option world must be an fnn.distributed.World .* got str"):
        net.apply(params, x, world="world")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"BatchNorm\(.*sync='yes'\): sync must be True or False, got str"):
        BatchNorm(sync="yes")  # type: ignore[arg-type]


def test_checkpoints_in_the_single_process_world(tmp_path: Path) -> None:
    w = dist.World()
    tree = {"params": {"w": np.arange(3.0)}, "step": np.array(4)}
    dist.save(w, tmp_path / "c.fnn", tree, metadata={"epoch": 2})
    assert fnn.tree.allclose(dist.load(w, tmp_path / "c.fnn", like=tree), tree)
    assert dist.load_metadata(w, tmp_path / "c.fnn") == {"epoch": 2}
    with pytest.raises(fnn.CheckpointError, match=r"\['params'\]\['w'\]"):
        dist.load(w, tmp_path / "c.fnn", like={**tree, "params": {"w": np.arange(4.0)}})


def test_abort_on_error_changes_nothing_alone() -> None:
    hook = sys.excepthook
    dist.abort_on_error(dist.World())
    assert sys.excepthook is hook


# --- real MPI jobs --------------------------------------------------------------------------------

def mpirun(n: int, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return launch(n, HERE / "mpi_worker.py", *args, timeout=timeout)


@pytest.fixture(scope="module")
def equivalence_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[int, list[Any]]:
    """What every rank of a 2-, 3- and 4-rank job computed for every configuration."""
    runs = {}
    for n in (2, 3, 4):
        out = tmp_path_factory.mktemp(f"equivalence{n}")
        check(mpirun(n, "equivalence", str(out)))
        runs[n] = [fnn.load(out / f"equivalence-rank{r}.fnn") for r in range(n)]
    return runs


@cache
def single_process(bn: bool, opt: str, dtype: Any) -> dict[str, Any]:
    w = dist.World()
    return mpi_worker.train(w, mpi_worker.start(w, bn, opt, dtype), bn, opt, dtype, range(mpi_worker.STEPS),
                            first_grads=True)


def assert_close(got: Any, want: Any, dtype: Any) -> None:
    """float64: every element to 1e-12; float32: every leaf to 1e-5 relative (in the 2-norm)."""
    fnn.tree.check_same_structure(got, want, shapes=True)
    for (path, g), w in zip(fnn.tree.flatten(got)[0], fnn.tree.leaves(want)):
        assert g.dtype == w.dtype, fnn.tree.path_str(path)
        if np.dtype(dtype) == np.float64:
            np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12, err_msg=fnn.tree.path_str(path))
        else:
            err = np.linalg.norm((g - w).astype(np.float64)) / max(np.linalg.norm(w.astype(np.float64)), 1e-30)
            assert err <= 1e-5, f"{fnn.tree.path_str(path)}: relative error {err:.2e}"


def test_single_process_reference_trains_and_matches_the_plain_mean_loss_step() -> None:
    """The reference is the ordinary single-process step: its first gradient is that of the mean loss."""
    bn, opt, dtype = True, "sgd", np.float64
    net, w = mpi_worker.lenet(bn), dist.World()
    params = mpi_worker.start(w, bn, opt, dtype)["params"]
    x, y = mpi_worker.global_batch(0, dtype)
    logits, vjp = net.apply(params, x, train=True)
    _, dlogits = fnn.losses.softmax_cross_entropy(logits, y)
    grads, _ = vjp(dlogits, need_dx=False)
    assert_close(single_process(bn, opt, dtype)["grads"], grads, dtype)


@pytest.mark.parametrize("n", [2, 3, 4])
def test_ranks_train_exactly_like_one_process_on_the_global_batch(equivalence_runs: dict[int, list[Any]],
                                                                  n: int) -> None:
    ranks = equivalence_runs[n]
    for bn, opt, dtype in mpi_worker.CONFIGS:
        name = mpi_worker.config_name(bn, opt, dtype)
        for r in range(1, n):  # every rank holds the same bits
            assert all(np.array_equal(a, b) for a, b in zip(fnn.tree.leaves(ranks[0][name]),
                                                            fnn.tree.leaves(ranks[r][name])))
        ref = single_process(bn, opt, dtype)
        assert_close(ranks[0][name]["grads"], ref["grads"], dtype)  # the gradient, leaf by leaf
        assert_close(ranks[0][name], ref, dtype)  # params, optimizer and BatchNorm state after 10 steps


def test_a_structure_mismatch_raises_on_every_rank_and_sub_communicators_work(tmp_path: Path) -> None:
    check(mpirun(3, "mismatch", str(tmp_path)))
    for r in range(3):
        messages = fnn.load_metadata(tmp_path / f"mismatch-rank{r}.fnn")
        for name in ("allreduce", "broadcast"):
            assert "the trees differ between ranks" in messages[name], messages[name]
            assert "rank 1: its tree has leaves [\"['extra']\"] that rank 0's lacks" in messages[name]
            assert "rank 2: leaf ['w'] has shape (2, 3)" in messages[name]
        assert messages["leaf"] == ("TypeError: fnn.distributed.allreduce: some ranks cannot reduce their trees: "
                                    "rank 2: fnn.distributed.allreduce: leaf ['w'] must be a numpy array, got float")
        assert messages["load"].startswith("DistributedError: fnn.distributed.load: failed on rank 0: "
                                           "FileNotFoundError"), messages["load"]
    out = [fnn.load(tmp_path / f"mismatch-rank{r}.fnn") for r in range(3)]
    masks = [o["dropout"] > 0 for o in out]
    assert not np.array_equal(masks[0], masks[1]) and not np.array_equal(masks[1], masks[2])
    # World(comm) on a sub-communicator: ranks 0 and 2 sum to 2, rank 1 is alone.
    assert [(float(o["sub"][0]), int(o["sub_size"])) for o in out] == [(2.0, 2), (1.0, 1), (2.0, 2)]


def test_a_failing_rank_ends_the_whole_job_promptly(tmp_path: Path) -> None:
    start = time.perf_counter()
    proc = mpirun(2, "fault", str(tmp_path), timeout=60)
    assert proc.returncode != 0
    assert "[fnn rank 1/2] aborting the job" in proc.stderr
    assert "RuntimeError: deliberate failure on rank 1 at step 3" in proc.stderr
    assert time.perf_counter() - start < 60


def test_resume_on_another_world_size_and_bitwise_on_the_same(tmp_path: Path,
                                                              equivalence_runs: dict[int, list[Any]]) -> None:
    ckpt = tmp_path / "half.fnn"
    check(mpirun(2, "resume", str(tmp_path), "save", str(ckpt)))
    assert fnn.load_metadata(ckpt) == {"world_size": 2}
    for n in (3, 2):
        out = tmp_path / f"from2to{n}"
        out.mkdir()
        check(mpirun(n, "resume", str(out), "load", str(ckpt)))
        resumed = fnn.load(out / "resume-rank0.fnn")
        assert_close(resumed, {k: v for k, v in single_process(True, "adam", np.float64).items() if k != "grads"},
                     np.float64)
    straight = {k: v for k, v in equivalence_runs[2][0]["bn-adam-float64"].items() if k != "grads"}
    assert all(np.array_equal(a, b) for a, b in zip(fnn.tree.leaves(resumed), fnn.tree.leaves(straight), strict=True))
