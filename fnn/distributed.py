"""Data-parallel training on MPI: one process per core, gradients summed across processes.

Every process (a *rank*) holds the same params, takes its own slice of each global
batch, computes its share of the gradient, and after one all-reduce every rank
holds the gradient of the whole global batch and makes the same update. MPI is
the engine (mpi4py, on Open MPI, MPICH or a cluster's own); this module adds what
fnn's trees need on top of it:

- :func:`world` gives a :class:`World` (rank, size, communicator). Without mpi4py,
  or outside ``mpiexec``, it is the single-process world of size 1 and every
  function here does no communication, so one script serves both.
- :func:`broadcast` sends params and optimizer state from rank 0 to every rank.
- :func:`allreduce` sums (or averages) a gradient tree across ranks: its leaves
  are packed into one contiguous buffer per dtype and reduced with one in-place
  ``Allreduce`` per buffer. ``deterministic=True`` sums in rank order instead.
- :func:`batches` and :func:`shard` give each rank a disjoint, deterministic slice
  of every global batch; the slices of all ranks are exactly the global batch.
- :func:`reduce_metrics` sums loss sums and counts; :func:`save` and :func:`load`
  checkpoint from rank 0; :meth:`World.print` prints on rank 0 only;
  :func:`abort_on_error` makes an exception on any rank end the whole job.

The global batch is fixed, not scaled with the world size: ``batch_size`` always
means the examples in one update, so a run gives the same updates (up to rounding)
on any number of ranks, and can be resumed on another number. Each rank
differentiates *its share of the global loss*: the sum of its examples' losses
divided by the size of the global batch (``Shard.total``). The sum of those
gradients over ranks is the gradient of the global-batch mean loss, even when the
batch does not split evenly::

    world = fnn.distributed.world()
    params = fnn.distributed.broadcast(world, params)
    for shard in fnn.distributed.batches(world, key, (x, y), batch_size=512):
        xs, ys = shard.arrays
        logits, vjp = net.apply(params, xs, world=world)
        loss_sum, dlogits = fnn.losses.softmax_cross_entropy(logits, ys, reduction="sum")
        grads, _ = vjp(dlogits / shard.total, need_dx=False)
        grads = fnn.distributed.allreduce(world, grads)
        params, opt_state = opt.update(params, grads, opt_state)

Passing ``world=`` to ``apply`` says that ``x`` is this rank's shard of a global
batch: BatchNorm then computes its statistics over the global batch, and Dropout
draws its masks from a key folded with the rank. See ``docs/distributed.md``.
"""

from __future__ import annotations

import hashlib
import os
import sys
import traceback
from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import Any, NamedTuple

import numpy as np

from fnn import checkpoint as _checkpoint
from fnn import data as _data
from fnn import random as _random
from fnn import tree as _tree
from fnn import validate

__all__ = [
    "World",
    "world",
    "broadcast",
    "allreduce",
    "allgather",
    "reduce_metrics",
    "Shard",
    "shard",
    "batches",
    "rank_key",
    "save",
    "load",
    "load_metadata",
    "abort_on_error",
    "DistributedError",
    "LAUNCHER_VARS",
]

LAUNCHER_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MV2_COMM_WORLD_SIZE")
"""Environment variables that MPI launchers set in the processes they start (Open MPI,
MPICH/Hydra and Intel MPI, PMIx as used by Open MPI 5 and Slurm, MVAPICH2)."""


class DistributedError(RuntimeError):
    """A failure that every rank of the world raises together, such as a checkpoint rank 0 could not read."""


class World:
    """The processes that train together: ``rank`` in ``[0, size)``, and ``comm``, the
    mpi4py communicator (``None`` for the single-process world).

    >>> w = World()
    >>> w.rank, w.size, w.is_root
    (0, 1, True)
    """

    __slots__ = ("comm", "rank", "size")

    def __init__(self, comm: Any = None) -> None:
        self.comm = comm
        self.rank = int(comm.Get_rank()) if comm is not None else 0
        self.size = int(comm.Get_size()) if comm is not None else 1

    @property
    def is_root(self) -> bool:
        """True on rank 0, the rank that prints and writes checkpoints."""
        return self.rank == 0

    def print(self, *args: Any, **kwargs: Any) -> None:
        """``print`` on rank 0 only (flushed, so lines from a job appear as they happen)."""
        if self.rank == 0:
            print(*args, **{"flush": True, **kwargs})

    def barrier(self) -> None:
        """Wait until every rank has reached this call."""
        if self.size > 1:
            self.comm.Barrier()

    def __repr__(self) -> str:
        return f"World(rank={self.rank}, size={self.size})"


def _launched_by_mpi() -> bool:
    forced = os.environ.get("FNN_MPI")
    if forced in ("0", "1"):
        return forced == "1"
    return any(v in os.environ for v in LAUNCHER_VARS)


def world(comm: Any = None) -> World:
    """The world this process trains in.

    With ``comm`` (an mpi4py communicator, for example a sub-communicator from
    ``MPI.COMM_WORLD.Split``), that communicator. Otherwise ``MPI.COMM_WORLD`` when
    the process was started by an MPI launcher (``mpiexec``, ``mpirun``, ``srun``),
    and the single-process world of size 1 when it was not: a plain ``python
    script.py`` never initializes MPI, so it does not need mpi4py and does not pay
    MPI's start-up. ``FNN_MPI=1`` forces MPI (a launcher this check does not know),
    ``FNN_MPI=0`` forces one process. Started by a launcher without mpi4py
    installed, it raises ``DistributedError`` rather than let every rank train the
    whole model alone.
    """
    if comm is not None:
        if not (callable(getattr(comm, "Get_rank", None)) and callable(getattr(comm, "Allreduce", None))):
            raise TypeError(f"fnn.distributed.world: comm must be an mpi4py communicator, got {type(comm).__name__}")
        return World(comm)
    if not _launched_by_mpi():
        return World()
    try:
        from mpi4py import MPI
    except ImportError as err:
        raise DistributedError(
            "fnn.distributed.world: this process was started by an MPI launcher but mpi4py is not installed, "
            "so every rank would train alone; install it with pip install 'fnn[mpi]' (or set FNN_MPI=0)"
        ) from err
    return World(MPI.COMM_WORLD)


def _check_world(w: Any, where: str) -> World:
    return validate.instance(where, "world", w, World, "an fnn.distributed.World (from fnn.distributed.world())")


# --- agreeing across ranks ----------------------------------------------------------------------

def _signature(where: str, pairs: Sequence[tuple[Any, Any]]) -> list[tuple[str, tuple[int, ...], str]]:
    sig = []
    for path, leaf in pairs:
        if not isinstance(leaf, np.ndarray):
            raise TypeError(f"{where}: leaf {_tree.path_str(path)} must be a numpy array, got {type(leaf).__name__}")
        if leaf.dtype.kind not in "iuf":
            raise TypeError(f"{where}: leaf {_tree.path_str(path)} has dtype {leaf.dtype}; "
                            f"only integer and float arrays can be reduced")
        sig.append((_tree.path_str(path), tuple(leaf.shape), leaf.dtype.str))
    return sig


def _describe_difference(mine: list[Any], root: list[Any]) -> str:
    paths, root_paths = {p for p, _, _ in mine}, {p for p, _, _ in root}
    if paths != root_paths:
        extra, missing = sorted(paths - root_paths), sorted(root_paths - paths)
        return (f"its tree has leaves {extra[:3]} that rank 0's lacks" if extra else
                f"its tree lacks leaves {missing[:3]} that rank 0's has")
    root_of = {p: (s, d) for p, s, d in root}
    for p, s, d in mine:
        if (s, d) != root_of[p]:
            return (f"leaf {p} has shape {s} and dtype {np.dtype(d)} but rank 0's has shape {root_of[p][0]} "
                    f"and dtype {np.dtype(root_of[p][1])}")
    return "its tree's structure differs from rank 0's"


Signature = list[tuple[str, tuple[int, ...], str]]


def _check_same_trees(w: World, where: str, t: Any) -> tuple[Signature, list[np.ndarray], Any]:
    """The tree's signature, leaves and rebuild function (:func:`fnn.tree.flatten`), after
    checking (one small Allgather) that every rank has the same signature.

    A mismatch raises ``ValueError`` on every rank, naming the ranks that differ from rank
    0 and how; a leaf that cannot be reduced raises ``TypeError``, on every rank too when
    only some ranks have one, so that no rank is left waiting in a collective.
    """
    pairs, rebuild = _tree.flatten(t)
    leaves = [leaf for _, leaf in pairs]
    try:
        sig, local_error = _signature(where, pairs), None
    except TypeError as err:
        if w.size == 1:
            raise
        sig, local_error = [], str(err)
    if w.size == 1:
        return sig, leaves, rebuild
    digest = np.frombuffer(hashlib.blake2b(repr(sig).encode(), digest_size=8).digest(), np.int64) | 1
    mine = np.zeros(1, np.int64) if local_error else digest.copy()  # 0 marks a rank that failed
    digests = np.empty(w.size, np.int64)
    w.comm.Allgather(mine, digests)
    if (digests == digests[0]).all() and digests[0] != 0:
        return sig, leaves, rebuild
    # Every rank now knows that something is wrong, so every rank takes part in what follows.
    root_sig = w.comm.bcast(sig if w.rank == 0 and not local_error else None, root=0)
    if local_error:
        problem: str | None = local_error
    elif digests[w.rank] == digests[0] or root_sig is None:
        problem = None
    else:
        problem = _describe_difference(sig, root_sig)
    problems = w.comm.allgather((problem, local_error is not None))
    report = "; ".join(f"rank {r}: {p}" for r, (p, _) in enumerate(problems) if p is not None)
    if any(failed for _, failed in problems):
        raise TypeError(f"{where}: some ranks cannot reduce their trees: {report}")
    raise ValueError(f"{where}: the trees differ between ranks (every rank must pass the same structure, shapes "
                     f"and dtypes): {report}")


# --- packing a tree into one buffer per dtype ---------------------------------------------------

def _pack(leaves: Sequence[np.ndarray]) -> dict[str, tuple[np.ndarray, list[int]]]:
    """One contiguous buffer per dtype, leaves in flatten order; the indices of the leaves in each."""
    groups: dict[str, list[int]] = {}
    for i, leaf in enumerate(leaves):
        groups.setdefault(leaf.dtype.str, []).append(i)
    buffers = {}
    for dt, idx in groups.items():
        buf = np.empty(sum(leaves[i].size for i in idx), np.dtype(dt))
        offset = 0
        for i in idx:
            n = leaves[i].size
            buf[offset:offset + n] = leaves[i].reshape(-1)
            offset += n
        buffers[dt] = (buf, idx)
    return buffers


def _unpack(buffers: dict[str, tuple[np.ndarray, list[int]]], leaves: Sequence[np.ndarray]) -> list[np.ndarray]:
    out: list[Any] = [None] * len(leaves)
    for buf, idx in buffers.values():
        offset = 0
        for i in idx:
            n = leaves[i].size
            out[i] = buf[offset:offset + n].reshape(leaves[i].shape)
            offset += n
    return out


def _sum_in_rank_order(w: World, buf: np.ndarray) -> None:
    gathered = np.empty((w.size, buf.size), buf.dtype)
    w.comm.Allgather(buf, gathered)
    buf[...] = gathered[0]
    for r in range(1, w.size):
        buf += gathered[r]


# --- collectives on trees -----------------------------------------------------------------------

def broadcast(world: World, tree: Any, root: int = 0) -> Any:
    """Every rank gets rank ``root``'s values of ``tree``: params, optimizer state, BatchNorm state.

    Every rank passes a tree of the same structure, shapes and dtypes (for example
    params from ``init`` with any key); the values of the non-root ranks are
    replaced. One ``Bcast`` per dtype. Returns a new tree; ``tree`` is not modified.
    """
    w = _check_world(world, "fnn.distributed.broadcast")
    root = validate.integer("fnn.distributed.broadcast", "root", root, low=0, high=w.size - 1)
    _, leaves, rebuild = _check_same_trees(w, "fnn.distributed.broadcast", tree)
    if w.size == 1:
        return rebuild([leaf.copy() for leaf in leaves])
    buffers = _pack(leaves)
    for buf, _ in buffers.values():
        w.comm.Bcast(buf, root=root)
    return rebuild(_unpack(buffers, leaves))


def allreduce(world: World, tree: Any, *, mean: bool = False, deterministic: bool = False) -> Any:
    """The sum over ranks of ``tree`` (gradients), leaf by leaf; with ``mean=True`` divided by the world size.

    All leaves of one dtype are packed into one contiguous buffer, reduced by one
    in-place ``Allreduce``, and returned as views into it. First, one small
    ``Allgather`` checks that every rank has the same structure, shapes and dtypes;
    a mismatch raises ``ValueError`` on every rank (never a hang), naming the ranks
    and the first difference. ``deterministic=True`` gathers every rank's buffer and
    sums in rank order, so the result is bitwise the same on every rank and with any
    MPI implementation or algorithm, at ``size`` times the memory and traffic.
    In the single-process world the tree is returned as it is (divided by 1 for ``mean``).

    Use the sum for gradients of each rank's share of the global loss (see the
    module docstring); ``mean=True`` averages values every rank computed alike, such
    as per-rank BatchNorm statistics.
    """
    w = _check_world(world, "fnn.distributed.allreduce")
    mean = validate.boolean("fnn.distributed.allreduce", "mean", mean)
    deterministic = validate.boolean("fnn.distributed.allreduce", "deterministic", deterministic)
    sig, leaves, rebuild = _check_same_trees(w, "fnn.distributed.allreduce", tree)
    if mean and any(np.dtype(d).kind != "f" for _, _, d in sig):
        raise TypeError("fnn.distributed.allreduce: mean=True needs float leaves; sum integer counts instead")
    if w.size == 1:
        return tree
    buffers = _pack(leaves)
    for buf, _ in buffers.values():
        if deterministic:
            _sum_in_rank_order(w, buf)
        else:
            w.comm.Allreduce(_in_place(), buf)
        if mean:
            buf /= buf.dtype.type(w.size)
    return rebuild(_unpack(buffers, leaves))


def _in_place() -> Any:
    from mpi4py import MPI

    return MPI.IN_PLACE


def allgather(world: World, x: np.ndarray) -> np.ndarray:
    """``(size, *x.shape)``: every rank's ``x`` stacked in rank order (same shape and dtype on every rank)."""
    w = _check_world(world, "fnn.distributed.allgather")
    if not isinstance(x, np.ndarray):
        raise TypeError(f"fnn.distributed.allgather: x must be a numpy array, got {type(x).__name__}")
    x = np.ascontiguousarray(x)
    if w.size == 1:
        return x[None].copy()
    out = np.empty((w.size, *x.shape), x.dtype)
    w.comm.Allgather(x, out)
    return out


def reduce_metrics(world: World, metrics: dict[str, float]) -> dict[str, float]:
    """Sum numbers such as loss sums, correct counts and example counts over ranks (as float64).

    Divide sums by the summed count afterwards: ``m = reduce_metrics(world, {"loss": s, "n": n});
    m["loss"] / m["n"]``.
    """
    w = _check_world(world, "fnn.distributed.reduce_metrics")
    if not isinstance(metrics, dict) or not all(isinstance(k, str) for k in metrics):
        raise TypeError(f"fnn.distributed.reduce_metrics: metrics must be a dict of str to numbers, "
                        f"got {type(metrics).__name__}")
    values = {}
    for k, v in metrics.items():
        if not validate.is_number(v):  # not validate.number: a NaN loss is reported, not refused
            raise TypeError(f"fnn.distributed.reduce_metrics: metrics[{k!r}] must be a number, got {v!r:.60}")
        values[k] = np.array(float(v))
    summed = allreduce(w, values, deterministic=True)
    return {k: float(summed[k]) for k in metrics}


# --- data ---------------------------------------------------------------------------------------

class Shard(NamedTuple):
    """This rank's part of a global batch: ``arrays`` (the rows ``start:start + len``) and
    ``total``, the number of examples in the global batch."""

    arrays: tuple[np.ndarray, ...]
    start: int
    total: int


def _bounds(w: World, n: int) -> tuple[int, int]:
    """Rank ``r`` takes rows ``[r * n // size, (r + 1) * n // size)``: contiguous, sizes differ by at most one."""
    return w.rank * n // w.size, (w.rank + 1) * n // w.size


def shard(world: World, arrays: Sequence[np.ndarray]) -> Shard:
    """This rank's slice of a global batch ``arrays`` (a tuple sharing the first axis).

    Rank ``r`` of ``P`` takes rows ``r * N // P`` to ``(r + 1) * N // P``: disjoint,
    in rank order, their union the whole batch; some ranks get no rows when ``N < P``.

    >>> shard(World(), (np.arange(5),)).arrays[0]
    array([0, 1, 2, 3, 4])
    """
    w = _check_world(world, "fnn.distributed.shard")
    arrays, n = validate.aligned_arrays("fnn.distributed.shard", arrays)
    lo, hi = _bounds(w, n)
    return Shard(tuple(a[lo:hi] for a in arrays), lo, n)


def batches(world: World, key: _random.Key | None, arrays: Sequence[np.ndarray], batch_size: int,
            shuffle: bool = True, drop_last: bool = False) -> Iterator[Shard]:
    """The global batches of :func:`fnn.data.batches`, each as this rank's :class:`Shard`.

    Every rank draws the same order from ``key``; ``batch_size`` is the *global*
    batch, whatever the world size, so the sequence of global batches, and so the
    training run, does not depend on the number of ranks. Each rank gathers only
    its own rows.
    """
    w = _check_world(world, "fnn.distributed.batches")
    arrays, index_batches = _data.batch_indices(key, arrays, batch_size, shuffle, drop_last)

    def gen() -> Iterator[Shard]:
        for idx in index_batches:
            lo, hi = _bounds(w, len(idx))
            yield Shard(tuple(a[idx[lo:hi]] for a in arrays), lo, len(idx))

    return gen()


def rank_key(world: World, key: _random.Key) -> _random.Key:
    """``key`` folded with this rank (``key`` itself in the single-process world): a key for
    random draws that must differ between ranks, such as Dropout masks of different examples."""
    w = _check_world(world, "fnn.distributed.rank_key")
    return key if w.size == 1 else _random.fold_in(key, w.rank)


# --- checkpoints --------------------------------------------------------------------------------

def _on_root(w: World, where: str, fn: Any) -> Any:
    """Run ``fn()`` on rank 0; every rank raises :class:`DistributedError` if it failed there."""
    result, problem = None, None
    if w.rank == 0:
        try:
            result = fn()
        except Exception as err:  # reported to every rank below, so none waits for rank 0 forever
            if w.size == 1:
                raise
            problem = f"{type(err).__name__}: {err}"
    if w.size > 1:
        problem = w.comm.bcast(problem, root=0)
    if problem is not None:
        raise DistributedError(f"{where}: failed on rank 0: {problem}")
    return result


def save(world: World, path: str | os.PathLike[str], tree: Any, metadata: Any = None) -> None:
    """:func:`fnn.save` on rank 0 only; every rank returns once the file is written,
    and every rank raises :class:`DistributedError` if rank 0 could not write it."""
    w = _check_world(world, "fnn.distributed.save")
    _on_root(w, "fnn.distributed.save", lambda: _checkpoint.save(path, tree, metadata))


def load(world: World, path: str | os.PathLike[str], like: Any) -> Any:
    """Rank 0 reads the checkpoint at ``path`` (checked against ``like``) and broadcasts it.

    Every rank passes ``like``, a tree of the checkpoint's structure (fresh params
    and optimizer state), so only rank 0 needs the file. A file rank 0 cannot read
    raises :class:`DistributedError` on every rank.
    """
    w = _check_world(world, "fnn.distributed.load")
    loaded = _on_root(w, "fnn.distributed.load", lambda: _checkpoint.load(path, like=like))
    return broadcast(w, loaded if w.rank == 0 else like)


def load_metadata(world: World, path: str | os.PathLike[str]) -> Any:
    """Rank 0 reads the checkpoint's JSON metadata and every rank gets it."""
    w = _check_world(world, "fnn.distributed.load_metadata")
    meta = _on_root(w, "fnn.distributed.load_metadata", lambda: _checkpoint.load_metadata(path))
    return w.comm.bcast(meta, root=0) if w.size > 1 else meta


# --- faults -------------------------------------------------------------------------------------

def abort_on_error(world: World) -> None:
    """From now on, an exception that reaches the top of this rank ends the whole job.

    It prints the rank and its traceback to stderr and calls ``MPI_Abort``, which
    makes ``mpiexec`` stop every rank and exit non-zero, instead of leaving the
    other ranks waiting forever in their next collective. Call it once, at the top
    of a script (it sets ``sys.excepthook``). Nothing changes in the single-process world.
    """
    w = _check_world(world, "fnn.distributed.abort_on_error")
    if w.size == 1:
        return
    previous = sys.excepthook

    def hook(kind: type[BaseException], err: BaseException, tb: TracebackType | None) -> None:
        if isinstance(err, SystemExit) and err.code in (None, 0):
            previous(kind, err, tb)
            return
        text = "".join(traceback.format_exception(kind, err, tb))
        sys.stderr.write(f"[fnn rank {w.rank}/{w.size}] aborting the job: {text}")
        sys.stderr.flush()
        w.comm.Abort(1)

    sys.excepthook = hook
