"""Every shared argument check, under one rule.

The rule (also in ``docs/errors.md``):

- the wrong kind of object raises ``TypeError``; the right kind with a value out of
  range raises ``ValueError``;
- numpy scalars are accepted wherever Python numbers are (``np.float32(0.1)``,
  ``np.int64(3)``), and ``bool`` is never taken for a number or an int;
- a bool option takes ``True``/``False`` (or ``np.bool_``) only: ``train="False"`` is
  a ``TypeError``, since a non-empty string is true;
- a message starts with ``where`` (the layer's kind such as ``"Dropout(0.5)"``, or a
  function's name such as ``"softmax_cross_entropy"``), then names the argument, what
  was received and what was expected.

Each check returns the value converted to a plain Python type (``float``, ``int``,
``bool``, ``tuple``), so callers keep no numpy scalars around by accident.

>>> number("Dropout", "rate", np.float32(0.25), low=0, high=1, high_open=True)
0.25
>>> integer("Dense", "out_features", True)
Traceback (most recent call last):
...
TypeError: Dense: out_features must be an int, got bool True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "is_number",
    "is_int",
    "number",
    "integer",
    "probability",
    "boolean",
    "choice",
    "pair",
    "padding",
    "float_dtype",
    "number_pair",
    "aligned_arrays",
    "function",
    "instance",
    "example_shape",
    "array_shape",
    "key",
    "Pair",
    "Padding",
]

Pair = tuple[int, int]
"""A 2-D size, ``(height, width)``: kernel size, stride, dilation."""
Padding = tuple[int, int, int, int]
"""Padding as ``(top, bottom, left, right)``."""


def _got(value: Any) -> str:
    return f"{type(value).__name__} {value!r:.60}"


def is_number(value: Any) -> bool:
    """A real Python or numpy number, not a bool."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def is_int(value: Any) -> bool:
    """A Python or numpy integer, not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _bounds(low: float, high: float, low_open: bool, high_open: bool) -> str:
    return f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"


def number(where: str, name: str, value: Any, *, low: float = -math.inf, high: float = math.inf,
           low_open: bool = False, high_open: bool = False) -> float:
    """``value`` as a finite ``float`` in the interval from ``low`` to ``high`` (closed unless ``*_open``)."""
    if not is_number(value):
        raise TypeError(f"{where}: {name} must be a number, got {_got(value)}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{where}: {name} must be a finite number, got {value!r}")
    if v < low or v > high or (low_open and v == low) or (high_open and v == high):
        raise ValueError(f"{where}: {name} must be in {_bounds(low, high, low_open, high_open)}, got {value!r}")
    return v


def integer(where: str, name: str, value: Any, *, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an ``int`` in ``[low, high]`` (either bound may be ``None``)."""
    if not is_int(value):
        raise TypeError(f"{where}: {name} must be an int, got {_got(value)}")
    v = int(value)
    if low is not None and v < low:
        raise ValueError(f"{where}: {name} must be >= {low}, got {v}")
    if high is not None and v > high:
        raise ValueError(f"{where}: {name} must be <= {high}, got {v}")
    return v


def probability(where: str, name: str, value: Any, *, high_open: bool = False) -> float:
    """A number in ``[0, 1]`` (``[0, 1)`` with ``high_open``)."""
    return number(where, name, value, low=0.0, high=1.0, high_open=high_open)


def boolean(where: str, name: str, value: Any) -> bool:
    """``True`` or ``False`` (``np.bool_`` too); anything else, a string included, is a ``TypeError``."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{where}: {name} must be True or False, got {_got(value)}")
    return bool(value)


def choice(where: str, name: str, value: Any, options: Sequence[str]) -> str:
    """One of the strings ``options``."""
    if not isinstance(value, str):
        raise TypeError(f"{where}: {name} must be one of {list(options)}, got {_got(value)}")
    if value not in options:
        raise ValueError(f"{where}: {name} must be one of {list(options)}, got {value!r}")
    return value


def pair(where: str, name: str, value: Any, *, low: int = 1) -> Pair:
    """An int or a pair of ints, each ``>= low``, as a pair."""
    items = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(items) != 2 or not all(is_int(v) for v in items):
        raise TypeError(f"{where}: {name} must be an int or a pair of ints, got {value!r}")
    if any(v < low for v in items):
        raise ValueError(f"{where}: {name} must be >= {low}, got {value!r}")
    return int(items[0]), int(items[1])


def padding(where: str, value: Any, *, allow_same: bool = True, explicit: bool = False) -> Padding | str:
    """Padding as ``(top, bottom, left, right)``, or ``"same"`` (when ``allow_same``).

    Takes ``"same"``, ``"valid"``, an int, a pair ``(ph, pw)``, ``((top, bottom), (left,
    right))``, and with ``explicit`` also a flat ``(top, bottom, left, right)``.
    """
    if isinstance(value, str):
        v = value.lower()
        if v == "valid":
            return (0, 0, 0, 0)
        if v == "same" and allow_same:
            return "same"
        choices = '"same", "valid"' if allow_same else '"valid"'
        raise ValueError(f"{where}: padding must be {choices}, an int or a pair, got {value!r}")
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, (tuple, list)) for v in value):
        (t, b), (left, r) = (pair(where, "padding", v, low=0) for v in value)
        return (t, b, left, r)
    if explicit and isinstance(value, (tuple, list)) and len(value) == 4:
        if not all(is_int(v) for v in value):
            raise TypeError(f"{where}: padding must hold ints, got {value!r}")
        if any(v < 0 for v in value):
            raise ValueError(f"{where}: padding must be >= 0, got {value!r}")
        return (int(value[0]), int(value[1]), int(value[2]), int(value[3]))
    ph, pw = pair(where, "padding", value, low=0)
    return (ph, ph, pw, pw)


def float_dtype(where: str, value: Any) -> np.dtype:
    """``np.float32`` or ``np.float64`` as a dtype (anything numpy reads as one of them)."""
    try:
        dt = np.dtype(value)
    except TypeError as err:
        raise TypeError(f"{where}: dtype must be float32 or float64, got {value!r}") from err
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"{where}: dtype must be float32 or float64, got {dt}")
    return dt


def example_shape(where: str, shape: Any) -> Any:
    """The shape of one example (no batch axis): a tuple of non-negative ints, or a tuple of such shapes."""
    if is_int(shape):
        raise TypeError(f"{where}: shape must be a tuple such as ({shape},), got the int {shape}")
    if not isinstance(shape, (tuple, list)):
        raise TypeError(f"{where}: shape must be a tuple of ints (one example, no batch axis), got {shape!r}")
    if shape and all(isinstance(s, (tuple, list)) for s in shape):
        return tuple(example_shape(where, s) for s in shape)
    if not all(is_int(s) for s in shape):
        raise TypeError(f"{where}: shape must hold ints (one example, no batch axis), got {shape!r}")
    if any(s < 0 for s in shape):
        raise ValueError(f"{where}: shape must hold non-negative ints (one example, no batch axis), got {shape!r}")
    return tuple(int(s) for s in shape)


def array_shape(where: str, shape: Any) -> tuple[int, ...]:
    """A whole array's shape (batch axis included, as numpy takes it): an int or a tuple of
    non-negative ints. (:func:`example_shape` is one example's, and refuses an int.)"""
    dims = (shape,) if is_int(shape) else shape
    if not isinstance(dims, (tuple, list)) or not all(is_int(d) for d in dims):
        raise TypeError(f"{where}: shape must be an int or a tuple of ints, got {shape!r:.60}")
    if any(d < 0 for d in dims):
        raise ValueError(f"{where}: shape must be a tuple of non-negative ints, got {shape!r}")
    return tuple(int(d) for d in dims)


def key(where: str, value: Any) -> np.ndarray:
    """A key made by ``fnn.random.key``: a ``uint32`` array of shape ``(4,)``."""
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{where}: expected a key made by fnn.random.key(seed) (uint32 array of shape (4,)), "
                        f"got {type(value).__name__}")
    if value.dtype != np.uint32 or value.shape != (4,):
        raise ValueError(f"{where}: expected a key made by fnn.random.key(seed) (uint32 array of shape (4,)), "
                         f"got an array of dtype {value.dtype} and shape {value.shape}")
    return value


def number_pair(where: str, name: str, value: Any, *, low: float = -math.inf, high: float = math.inf,
                high_open: bool = False) -> tuple[float, float]:
    """A pair of numbers (a tuple or list of two), each checked as :func:`number` (``betas``)."""
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise TypeError(f"{where}: {name} must be a pair of numbers, got {_got(value)}")
    return (number(where, f"{name}[0]", value[0], low=low, high=high, high_open=high_open),
            number(where, f"{name}[1]", value[1], low=low, high=high, high_open=high_open))


def function(where: str, name: str, value: Any, what: str = "a callable") -> Any:
    """A callable (a function, a schedule, a predicate); ``what`` says which, in the message."""
    if not callable(value):
        raise TypeError(f"{where}: {name} must be {what}, got {_got(value)}")
    return value


def instance(where: str, name: str, value: Any, cls: type, what: str) -> Any:
    """An instance of ``cls``; ``what`` describes it in the message (how to make one)."""
    if not isinstance(value, cls):
        raise TypeError(f"{where}: {name} must be {what}, got {type(value).__name__}")
    return value


def aligned_arrays(where: str, arrays: Any) -> tuple[tuple[np.ndarray, ...], int]:
    """A non-empty tuple (or list) of arrays sharing their first axis, such as ``(x, y)``, as a
    tuple of numpy arrays, and that length."""
    if isinstance(arrays, np.ndarray) or not isinstance(arrays, (tuple, list)):
        raise TypeError(f"{where}: arrays must be a tuple of arrays such as (x, y) or (x,), "
                        f"got {type(arrays).__name__}")
    arrays = tuple(np.asarray(a) for a in arrays)
    if not arrays:
        raise ValueError(f"{where}: needs at least one array")
    lengths = [len(a) if a.ndim else None for a in arrays]
    if lengths[0] is None or any(length != lengths[0] for length in lengths):
        raise ValueError(f"{where}: arrays must share their first axis length, got lengths {lengths}")
    return arrays, int(lengths[0])
