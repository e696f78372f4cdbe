"""Checkpoints: save and load trees of arrays, with no pickle anywhere.

File layout (all integers little-endian)::

    b"FNNCKPT1" | header length (u8) | header (UTF-8 JSON) | data | SHA-256 of all before

The header holds the tree's skeleton (dicts keep their key order; lists and
tuples are kept apart), each leaf's dtype (stored little-endian, loaded in native
byte order), shape, offset and length in the data
block, and the user's metadata (any JSON value). Loading checks the magic, the
checksum, and every header field before it touches the data, so a truncated,
corrupt or foreign file raises :class:`CheckpointError` and never runs code.
Writes go to a temporary file in the same directory, are flushed to disk, and
then renamed over the target, so an interrupted save leaves the old checkpoint.
A new file gets the mode ``open(path, "w")`` would give it (0o666 less the umask);
an overwritten one keeps its mode.

>>> import tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "ckpt.fnn")
>>> save(path, {"w": np.eye(2, dtype=np.float32)}, metadata={"epoch": 3})
>>> load(path)["w"].dtype, load_metadata(path)
(dtype('float32'), {'epoch': 3})
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import secrets
import struct
from typing import Any

import numpy as np

from fnn import tree as _tree

__all__ = ["CheckpointError", "save", "load", "load_metadata"]

_MAGIC = b"FNNCKPT1"
_DIGEST = 32
_KINDS = "biufc"  # bool, signed, unsigned, float, complex: plain bytes, never objects


class CheckpointError(ValueError):
    """A checkpoint that cannot be written or read: bad tree, corrupt or foreign file, or a
    loaded tree that does not match the template given as ``like``."""


def _encode(node: Any, path: tuple[Any, ...], leaves: list[np.ndarray]) -> Any:
    if isinstance(node, dict):
        for k in node:
            if not isinstance(k, str):
                raise CheckpointError(f"save: dict key {k!r} at {_tree.path_str(path)} is a "
                                      f"{type(k).__name__}; checkpoints hold str keys only")
        return {"dict": [[k, _encode(v, path + (k,), leaves)] for k, v in node.items()]}
    if isinstance(node, (list, tuple)):
        return {"list" if isinstance(node, list) else "tuple":
                [_encode(v, path + (i,), leaves) for i, v in enumerate(node)]}
    if node is None:
        raise CheckpointError(f"save: leaf at {_tree.path_str(path)} is None; use {{}} for an empty subtree")
    arr = np.asarray(node)
    if arr.dtype.kind not in _KINDS or arr.dtype.fields is not None:
        raise CheckpointError(f"save: leaf at {_tree.path_str(path)} has dtype {arr.dtype}; checkpoints hold "
                              f"bool, integer, float and complex arrays only")
    leaves.append(arr)
    return {"leaf": len(leaves) - 1}


def _create_temp(directory: str) -> tuple[int, str]:
    """Create and open a new file in ``directory`` with mode 0o666, which the umask then
    narrows as it does for ``open(path, "w")`` (``tempfile.mkstemp`` would force 0o600)."""
    while True:
        tmp = os.path.join(directory, f".fnn-ckpt-{secrets.token_hex(8)}")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666), tmp
        except FileExistsError:
            continue


def save(path: str | os.PathLike[str], tree: Any, metadata: Any = None) -> None:
    """Write ``tree`` (nested dicts/lists/tuples of arrays) and JSON ``metadata`` to ``path`` atomically."""
    leaves: list[np.ndarray] = []
    skeleton = _encode(tree, (), leaves)
    entries, offset = [], 0
    for arr in leaves:
        nbytes = arr.size * arr.dtype.itemsize
        entries.append({"dtype": arr.dtype.newbyteorder("<").str if arr.dtype.byteorder != "|" else arr.dtype.str,
                        "shape": list(arr.shape), "offset": offset, "nbytes": nbytes})
        offset += nbytes
    try:
        header = json.dumps({"version": 1, "tree": skeleton, "leaves": entries, "metadata": metadata},
                            allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"save: metadata must be JSON-serializable (no NaN/Inf): {err}") from err
    if json.loads(header)["metadata"] != metadata:
        raise CheckpointError("save: metadata would not load back equal (JSON turns tuples into lists and "
                              "dict keys into strings); use lists and str keys")
    name = os.fspath(path)
    directory = os.path.dirname(name) or "."
    try:
        fd, tmp = _create_temp(directory)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"save: cannot write {name!r}: directory {directory!r} does not exist") from err
    except OSError as err:
        raise type(err)(f"save: cannot write {name!r}: cannot create a file in directory {directory!r} "
                        f"({err.strerror})") from err
    try:
        with os.fdopen(fd, "wb") as f:
            if os.path.exists(name):
                os.chmod(tmp, os.stat(name).st_mode & 0o777)
            digest = hashlib.sha256()
            for chunk in (_MAGIC, struct.pack("<Q", len(header)), header):
                digest.update(chunk)
                f.write(chunk)
            for arr, entry in zip(leaves, entries):
                data = np.ascontiguousarray(arr, dtype=np.dtype(entry["dtype"])).tobytes()
                digest.update(data)
                f.write(data)
            f.write(digest.digest())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, name)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _read(path: str | os.PathLike[str]) -> tuple[dict[str, Any], memoryview]:
    with open(path, "rb") as f:
        raw = f.read()
    name = os.fspath(path)
    if len(raw) < len(_MAGIC) + 8 + _DIGEST or raw[:len(_MAGIC)] != _MAGIC:
        raise CheckpointError(f"load: {name} is not an fnn checkpoint (bad magic or too short)")
    if hashlib.sha256(raw[:-_DIGEST]).digest() != raw[-_DIGEST:]:
        raise CheckpointError(f"load: {name} is corrupt or truncated (checksum mismatch)")
    (hlen,) = struct.unpack("<Q", raw[8:16])
    if 16 + hlen > len(raw) - _DIGEST:
        raise CheckpointError(f"load: {name}: header length {hlen} runs past the end of the file")
    try:
        header = json.loads(raw[16:16 + hlen].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise CheckpointError(f"load: {name}: unreadable header ({err})") from err
    if (not isinstance(header, dict) or type(header.get("version")) is not int or header["version"] != 1
            or not isinstance(header.get("leaves"), list)):
        raise CheckpointError(f"load: {name}: unknown header layout")
    return header, memoryview(raw)[16 + hlen:len(raw) - _DIGEST]


def _leaf(name: str, entry: Any, data: memoryview) -> np.ndarray:
    try:
        dtype = np.dtype(entry["dtype"])
        shape = tuple(entry["shape"])
        offset, nbytes = entry["offset"], entry["nbytes"]
    except (TypeError, KeyError, ValueError) as err:
        raise CheckpointError(f"load: {name}: malformed leaf entry {entry!r:.200}") from err
    ints = all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (*shape, offset, nbytes))
    if dtype.kind not in _KINDS or dtype.fields is not None or not ints:
        raise CheckpointError(f"load: {name}: malformed leaf entry {entry!r:.200}")
    if math.prod(shape) * dtype.itemsize != nbytes or offset + nbytes > len(data):
        raise CheckpointError(f"load: {name}: leaf entry {entry!r:.200} does not fit the data block")
    try:
        arr = np.frombuffer(data[offset:offset + nbytes], dtype=dtype).reshape(shape)
    except ValueError as err:  # more than numpy's 64 axes, or a zero-size shape with an axis too large
        raise CheckpointError(f"load: {name}: malformed leaf entry {entry!r:.200} ({err})") from err
    return arr.astype(dtype.newbyteorder("="))


def _decode(name: str, node: Any, leaves: list[np.ndarray], used: set[int]) -> Any:
    if isinstance(node, dict) and len(node) == 1:
        (kind, value), = node.items()
        if kind == "leaf" and isinstance(value, int) and 0 <= value < len(leaves) and value not in used:
            used.add(value)
            return leaves[value]
        if kind == "dict" and isinstance(value, list) and all(
                isinstance(kv, list) and len(kv) == 2 and isinstance(kv[0], str) for kv in value):
            out = {k: _decode(name, v, leaves, used) for k, v in value}
            if len(out) == len(value):
                return out
        if kind in ("list", "tuple") and isinstance(value, list):
            items = [_decode(name, v, leaves, used) for v in value]
            return items if kind == "list" else tuple(items)
    raise CheckpointError(f"load: {name}: malformed tree skeleton near {node!r:.200}")


def _check_like(name: str, tree: Any, like: Any) -> None:
    try:
        _tree.check_same_structure(like, tree, names=["like", "the checkpoint"], where=f"load: {name}")
    except ValueError as err:
        raise CheckpointError(str(err)) from err
    for (path, want), got in zip(_tree.flatten(like)[0], _tree.leaves(tree)):
        want = np.asarray(want)
        if want.shape != got.shape or want.dtype.newbyteorder("=") != got.dtype:
            raise CheckpointError(f"load: {name}: at {_tree.path_str(path)} the checkpoint has {got.dtype} "
                                  f"{got.shape} but like= has {want.dtype} {want.shape}")


def load(path: str | os.PathLike[str], like: Any = None) -> Any:
    """Read the tree saved at ``path``. With ``like``, check that it has the same structure,
    shapes and dtypes, naming the first mismatching key path in a :class:`CheckpointError`."""
    name = os.fspath(path)
    header, data = _read(path)
    leaves = [_leaf(name, entry, data) for entry in header["leaves"]]
    used: set[int] = set()
    try:
        tree = _decode(name, header.get("tree"), leaves, used)
    except RecursionError as err:
        raise CheckpointError(f"load: {name}: tree skeleton nested too deeply") from err
    if len(used) != len(leaves):
        raise CheckpointError(f"load: {name}: the header lists leaves the tree does not use")
    if like is not None:
        _check_like(name, tree, like)
    return tree


def load_metadata(path: str | os.PathLike[str]) -> Any:
    """The JSON metadata saved with the checkpoint at ``path`` (``None`` if none was given).

    Checks the magic, the checksum and the header, not the leaves (:func:`load` does).
    """
    return _read(path)[0].get("metadata")
