"""Explicit, splittable random keys built on numpy's SeedSequence and Generator.

A key is a read-only ``uint32`` array of shape ``(4,)``. Nothing in fnn draws
from numpy's global random state: every random number comes from a key, so
the same seed gives bitwise-identical results on the same machine.

>>> k = key(0)
>>> a, b = split(k)
>>> bool((normal(a, (3,)) == normal(a, (3,))).all())
True
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fnn import validate as _validate

__all__ = [
    "Key",
    "key",
    "split",
    "fold_in",
    "check_key",
    "generator",
    "uniform",
    "normal",
    "bernoulli",
    "permutation",
]

Key = np.ndarray
"""A key: read-only ``np.ndarray`` of dtype ``uint32`` and shape ``(4,)``."""

_KEY_WORDS = 4
# Domain tags keep the streams used for splitting and for drawing apart.
_SPLIT, _DRAW, _FOLD = 1, 2, 3


def _make(words: np.ndarray) -> Key:
    out = np.array(words, dtype=np.uint32).reshape(_KEY_WORDS)
    out.setflags(write=False)
    return out


def check_key(k: Any, where: str = "key") -> Key:
    """Return ``k`` if it is a valid key, else raise a ``TypeError``/``ValueError`` naming ``where``
    (:func:`fnn.validate.key`)."""
    return _validate.key(where, k)


def key(seed: int) -> Key:
    """Make a key from a non-negative integer seed."""
    seed = _validate.integer("fnn.random.key", "seed", seed, low=0)
    return _make(np.random.SeedSequence(seed).generate_state(_KEY_WORDS, dtype=np.uint32))


def _seq(k: Key, *tag: int) -> np.random.SeedSequence:
    return np.random.SeedSequence([int(w) for w in k], spawn_key=tag)


def split(k: Key, n: int = 2) -> tuple[Key, ...]:
    """Derive ``n`` independent keys from ``k`` (``k`` itself should not be reused).

    The first keys do not depend on ``n``: ``split(k, 3)[:2] == split(k, 2)``, so a
    layer appended to a ``serial`` leaves the keys of the layers before it unchanged.
    """
    check_key(k, "fnn.random.split")
    n = _validate.integer("fnn.random.split", "n", n, low=0)
    words = _seq(k, _SPLIT).generate_state(_KEY_WORDS * n, dtype=np.uint32)
    return tuple(_make(w) for w in words.reshape(n, _KEY_WORDS))


def fold_in(k: Key, data: int) -> Key:
    """Derive a key from ``k`` and an integer (a step count, an epoch, a layer index)."""
    check_key(k, "fnn.random.fold_in")
    data = _validate.integer("fnn.random.fold_in", "data", data, low=0)
    return _make(_seq(k, _FOLD, data).generate_state(_KEY_WORDS, dtype=np.uint32))


def generator(k: Key) -> np.random.Generator:
    """A fresh numpy ``Generator`` seeded by ``k`` (for draws this module does not offer)."""
    check_key(k, "fnn.random.generator")
    return np.random.Generator(np.random.PCG64(_seq(k, _DRAW)))


def uniform(
    k: Key, shape: tuple[int, ...], dtype: Any = np.float32, low: float = 0.0, high: float = 1.0
) -> np.ndarray:
    """Uniform draws in ``[low, high)`` of the given shape and dtype."""
    where = "fnn.random.uniform"
    dt = _validate.float_dtype(where, dtype)
    low = _validate.number(where, "low", low)
    high = _validate.number(where, "high", high)
    out = np.asarray(generator(k).uniform(low, high, size=_validate.array_shape(where, shape))).astype(dt, copy=False)
    if high > low:  # rounding (numpy's, then the cast to float32) can reach ``high``: keep it excluded
        top = dt.type(high)
        np.minimum(out, np.nextafter(top, dt.type(low)) if top >= high else top, out=out)
    return out


def normal(
    k: Key, shape: tuple[int, ...], dtype: Any = np.float32, mean: float = 0.0, std: float = 1.0
) -> np.ndarray:
    """Normal draws with the given mean and standard deviation."""
    where = "fnn.random.normal"
    dt = _validate.float_dtype(where, dtype)
    mean = _validate.number(where, "mean", mean)
    std = _validate.number(where, "std", std, low=0.0)
    return np.asarray(generator(k).normal(mean, std, size=_validate.array_shape(where, shape))).astype(dt, copy=False)


def bernoulli(k: Key, p: float, shape: tuple[int, ...]) -> np.ndarray:
    """Boolean array whose entries are ``True`` with probability ``p``."""
    p = _validate.probability("fnn.random.bernoulli", "p", p)
    return generator(k).random(size=_validate.array_shape("fnn.random.bernoulli", shape)) < p


def permutation(k: Key, n: int) -> np.ndarray:
    """A random permutation of ``range(n)`` as an ``int64`` array."""
    n = _validate.integer("fnn.random.permutation", "n", n, low=0)
    return generator(k).permutation(n)
