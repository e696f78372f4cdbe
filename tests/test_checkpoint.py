"""Checkpoints: bitwise round trips of hypothesis-drawn trees, metadata, save-time errors, like=
mismatches, and hostile input: corrupted and truncated files, headers crafted with a valid
checksum, pickle and object-array payloads (never executed), and atomic writes."""

import hashlib
import json
import os
import pickle
import re
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fnn
from fnn import CheckpointError, load, load_metadata, save
from fnn import checkpoint as ckpt

DTYPES = [np.float16, np.float32, np.float64, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16,
          np.uint32, np.uint64, np.bool_, np.complex64, np.complex128]


# ----------------------------------------------------------------------------------------------
# Strategies

keys = st.one_of(st.text(max_size=6),
                 st.sampled_from(["/", "a/b", "../x", "é", "日本語", "", " ", "\x00", "leaf", "dict", "🙂"]))


@st.composite
def arrays(draw):
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=3))
    return draw(hnp.arrays(dtype, shape, elements=hnp.from_dtype(dtype)))  # floats include NaN, Inf, -0.0


trees = st.recursive(
    arrays(),
    lambda children: st.one_of(st.dictionaries(keys, children, max_size=4),
                               st.lists(children, max_size=3),
                               st.lists(children, max_size=3).map(tuple)),
    max_leaves=8,
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=10,
)


def assert_bitwise_equal(got, want, path="<root>"):
    """Same structure (dict key order, list vs tuple), same dtypes, shapes and bytes."""
    assert type(got) is type(want) or (isinstance(want, np.ndarray) and isinstance(got, np.ndarray)), path
    if isinstance(want, dict):
        assert list(got) == list(want), path
        for k in want:
            assert_bitwise_equal(got[k], want[k], f"{path}[{k!r}]")
    elif isinstance(want, (list, tuple)):
        assert len(got) == len(want), path
        for i, (g, w) in enumerate(zip(got, want)):
            assert_bitwise_equal(g, w, f"{path}[{i}]")
    else:
        assert got.dtype == want.dtype, path
        assert got.shape == want.shape, path
        assert got.tobytes() == want.tobytes(), path


# ----------------------------------------------------------------------------------------------
# Round trips


@settings(deadline=None)
@given(tree=trees, metadata=json_values)
def test_round_trip_is_bitwise(tmp_path_factory, tree, metadata):
    path = tmp_path_factory.mktemp("rt") / "ckpt.fnn"
    save(path, tree, metadata=metadata)
    loaded = load(path)
    assert_bitwise_equal(loaded, tree)
    assert load_metadata(path) == metadata
    assert_bitwise_equal(load(str(path), like=tree), tree)
    for leaf in fnn.tree.leaves(loaded):
        assert leaf.flags.writeable and leaf.dtype.isnative


def test_round_trip_of_special_values_and_dtypes(tmp_path):
    tree = {
        "floats": np.array([np.nan, -np.nan, np.inf, -np.inf, -0.0, 5e-324, np.finfo(np.float64).max]),
        "half": np.array([np.nan, np.inf, -0.0, 6e-8], np.float16),
        "nan_payload": np.array([0x7FF8000000000123], np.uint64).view(np.float64),
        "complex": np.array([complex(np.nan, -np.inf), 1 - 2j], np.complex64),
        "ints": [np.array(np.iinfo(t).min, t) for t in (np.int8, np.int16, np.int32, np.int64)],
        "uints": tuple(np.array(np.iinfo(t).max, t) for t in (np.uint8, np.uint16, np.uint32, np.uint64)),
        "bool": np.array([[True, False]]),
        "empty": {"a": np.zeros((0, 3), np.float32), "b": np.zeros((2, 0, 1), np.int16), "c": {}, "d": [], "e": ()},
        "scalar": np.array(3.5),
        "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
        "strided": np.arange(10, dtype=np.int32)[::3],
        "big_endian": np.arange(3, dtype=">i4"),
    }
    path = tmp_path / "special.fnn"
    save(path, tree)
    loaded = load(path)
    assert loaded["big_endian"].dtype == np.dtype("=i4") and loaded["big_endian"].tolist() == [0, 1, 2]
    del tree["big_endian"], loaded["big_endian"]
    assert_bitwise_equal(loaded, {**tree, "fortran": np.ascontiguousarray(tree["fortran"]),
                                  "strided": np.ascontiguousarray(tree["strided"])})


def test_root_leaf_and_python_scalars(tmp_path):
    save(tmp_path / "a.fnn", np.arange(3))
    assert load(tmp_path / "a.fnn").tolist() == [0, 1, 2]
    save(tmp_path / "b.fnn", {"step": 7, "lr": 0.5, "flag": True})
    loaded = load(tmp_path / "b.fnn")
    assert loaded["step"].item() == 7 and loaded["lr"].item() == 0.5 and loaded["flag"].item() is True


def test_params_and_optimizer_state_round_trip(tmp_path):
    net = fnn.serial(fnn.layers.Dense(4), fnn.layers.BatchNorm(), fnn.layers.Dense(2))
    params = net.init(fnn.random.key(0), (3,))
    opt = fnn.optim.adam()
    state = opt.init(params)
    out = net.apply(params, np.ones((4, 3), np.float32), train=True)
    bundle = {"params": params, "opt": state, "bn": out.state, "key": fnn.random.key(5)}
    save(tmp_path / "run.fnn", bundle, metadata={"epoch": 2, "note": "é/✓"})
    assert_bitwise_equal(load(tmp_path / "run.fnn", like=bundle), bundle)
    assert load_metadata(tmp_path / "run.fnn") == {"epoch": 2, "note": "é/✓"}


def test_metadata_defaults_to_none(tmp_path):
    save(tmp_path / "m.fnn", {"a": np.ones(1)})
    assert load_metadata(tmp_path / "m.fnn") is None


# ----------------------------------------------------------------------------------------------
# Errors at save


@pytest.mark.parametrize("tree, match", [
    ({1: np.ones(2)}, r"dict key 1 at <root> is a int; checkpoints hold str keys only"),
    ({"a": {("x",): np.ones(2)}}, r"dict key \('x',\) at \['a'\] is a tuple"),
    ({"a": [np.array([object()], dtype=object)]}, r"leaf at \['a'\]\[0\] has dtype object"),
    ({"s": np.array(["text"])}, r"leaf at \['s'\] has dtype <U4"),
    ({"r": np.zeros(2, dtype=[("a", "f8")])}, r"leaf at \['r'\] has dtype"),
    ({"t": np.array(["2020-01-01"], dtype="M8[D]")}, r"leaf at \['t'\] has dtype datetime64"),
])
def test_unsupported_trees_raise_at_save(tmp_path, tree, match):
    path = tmp_path / "bad.fnn"
    with pytest.raises(CheckpointError, match=match):
        save(path, tree)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("tree, match", [
    ({"params": {"w": np.ones(2)}, "state": None}, r"leaf at \['state'\] is None; use \{\} for an empty subtree"),
    ({"opt": [np.ones(1), None]}, r"leaf at \['opt'\]\[1\] is None; use \{\} for an empty subtree"),
    (None, r"leaf at <root> is None; use \{\} for an empty subtree"),
])
def test_none_leaf_raises_suggesting_an_empty_dict(tmp_path, tree, match):
    # Regression: a None leaf was reported as "has dtype object", which hid the fix.
    with pytest.raises(CheckpointError, match=r"^save: " + match + "$"):
        save(tmp_path / "bad.fnn", tree)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("metadata", [{"a": object()}, {"x": float("nan")}, [float("inf")], {"s": {1, 2}},
                                      np.ones(2)])
def test_non_json_metadata_raises_at_save(tmp_path, metadata):
    with pytest.raises(CheckpointError, match="metadata must be JSON-serializable"):
        save(tmp_path / "bad.fnn", {"a": np.ones(1)}, metadata=metadata)
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------------------------------------
# like=


def like_tree():
    return {"enc": {"w": np.ones((2, 3), np.float32), "b": np.zeros(3, np.float32)}, "steps": [np.array(1)]}


@pytest.mark.parametrize("change, match", [
    # messages read from like='s side: the checkpoint has an "unexpected" key or is "missing" one
    (lambda t: t["enc"].pop("b"), r"like and the checkpoint differ in structure at \['enc'\]: unexpected key\(s\) 'b'"),
    (lambda t: t["enc"].update(extra=np.ones(1)), r"at \['enc'\]: missing key\(s\) 'extra'"),
    (lambda t: t["enc"].update(w=np.ones((3, 2), np.float32)),
     r"at \['enc'\]\['w'\] the checkpoint has float32 \(2, 3\) but like= has float32 \(3, 2\)"),
    (lambda t: t["enc"].update(b=np.zeros(3, np.float64)),
     r"at \['enc'\]\['b'\] the checkpoint has float32 \(3,\) but like= has float64"),
    (lambda t: t.update(steps=(np.array(1),)), r"at \['steps'\]: tuple vs list"),
    (lambda t: t["steps"].append(np.array(2)), r"at \['steps'\]: length 2 vs 1"),
])
def test_like_mismatch_raises_naming_the_key_path(tmp_path, change, match):
    path = tmp_path / "c.fnn"
    save(path, like_tree())
    like = like_tree()
    change(like)
    with pytest.raises(CheckpointError, match=match):
        load(path, like=like)


# ----------------------------------------------------------------------------------------------
# Hostile files


def sample_bytes(tmp_path):
    path = tmp_path / "sample.fnn"
    save(path, {"w": np.arange(12, dtype=np.float32).reshape(3, 4), "b": [np.ones(2), (np.array(True),)],
                "é/x": np.zeros((0, 2))}, metadata={"epoch": 1})
    return path.read_bytes()


def craft(header, data=b""):
    """A file with the right magic and a valid checksum around an arbitrary header and data block."""
    if not isinstance(header, bytes):
        header = json.dumps(header).encode("utf-8")
    body = b"FNNCKPT1" + struct.pack("<Q", len(header)) + header + data
    return body + hashlib.sha256(body).digest()


def split_file(raw):
    (hlen,) = struct.unpack("<Q", raw[8:16])
    return json.loads(raw[16:16 + hlen]), raw[16 + hlen:-32]


def only_checkpoint_error(path, loader=load):
    """Loading raises CheckpointError and nothing else (no crash, no other exception type)."""
    try:
        loader(path)
    except CheckpointError:
        return
    except BaseException as err:  # noqa: BLE001 - the point is to catch everything else
        pytest.fail(f"{loader.__name__} raised {type(err).__name__}: {err}")
    pytest.fail(f"{loader.__name__} accepted a bad file")


def test_300_randomly_corrupted_or_truncated_files_raise_only_checkpoint_error(tmp_path):
    raw = sample_bytes(tmp_path)
    rng = np.random.default_rng(0)
    path = tmp_path / "corrupt.fnn"
    for i in range(300):
        data = bytearray(raw)
        mode = i % 3
        if mode in (0, 2):  # flip 1-4 bytes anywhere
            for pos in rng.integers(0, len(data), size=rng.integers(1, 5)):
                data[pos] ^= int(rng.integers(1, 256))
        if mode in (1, 2):  # truncate
            data = data[:int(rng.integers(0, len(raw)))]
        path.write_bytes(bytes(data))
        only_checkpoint_error(path)
        only_checkpoint_error(path, load_metadata)


def test_300_mutated_headers_with_valid_checksums_raise_only_checkpoint_error_or_load(tmp_path):
    """Byte mutations of the header, re-signed so they get past the checksum, exercise the parser."""
    header, data = split_file(sample_bytes(tmp_path))
    text = json.dumps(header).encode()
    rng = np.random.default_rng(1)
    alphabet = b'{}[]",:-0123456789eE.+ \\"leafdictlisttupleO<>|fiubc?'
    path = tmp_path / "mutated.fnn"
    for _ in range(300):
        mutated = bytearray(text)
        for _ in range(int(rng.integers(1, 4))):
            pos = int(rng.integers(0, len(mutated)))
            action = rng.integers(0, 3)
            if action == 0:
                mutated[pos] = alphabet[int(rng.integers(0, len(alphabet)))]
            elif action == 1:
                del mutated[pos]
            else:
                mutated.insert(pos, alphabet[int(rng.integers(0, len(alphabet)))])
        path.write_bytes(craft(bytes(mutated), data))
        try:
            load(path)
            load_metadata(path)
        except CheckpointError:
            pass
        except BaseException as err:  # noqa: BLE001
            pytest.fail(f"load raised {type(err).__name__}: {err}\nheader: {bytes(mutated)!r}")


def leaf_header(entry, tree=None, version=1):
    return {"version": version, "tree": tree if tree is not None else {"leaf": 0}, "leaves": [entry],
            "metadata": None}


GOOD = {"dtype": "<f8", "shape": [2], "offset": 0, "nbytes": 16}
DATA = np.array([1.0, 2.0]).tobytes()

MALICIOUS = {
    "not json": b"\xff\xfe not json",
    "invalid utf-8": b'{"version": 1, "x": "\xc3\x28"}',
    "list header": [],
    "string header": "header",
    "number header": 1,
    "null header": None,
    "version 2": leaf_header(GOOD, version=2),
    "no leaves": {"version": 1, "tree": {"leaf": 0}},
    "leaves not a list": {"version": 1, "tree": {"leaf": 0}, "leaves": {"0": GOOD}},
    "leaf entry is a list": leaf_header(["<f8", [2], 0, 16]),
    "leaf entry is a string": leaf_header("<f8"),
    "leaf entry missing nbytes": leaf_header({"dtype": "<f8", "shape": [2], "offset": 0}),
    "object dtype": leaf_header({**GOOD, "dtype": "O"}),
    "object dtype with byte order": leaf_header({**GOOD, "dtype": "|O"}),
    "unicode dtype": leaf_header({**GOOD, "dtype": "<U2", "nbytes": 16}),
    "bytes dtype": leaf_header({**GOOD, "dtype": "S8"}),
    "void dtype": leaf_header({**GOOD, "dtype": "V8"}),
    "subarray dtype": leaf_header({**GOOD, "dtype": "(2,)f8", "shape": [1]}),
    "datetime dtype": leaf_header({**GOOD, "dtype": "<M8[s]"}),
    "structured dtype list": leaf_header({**GOOD, "dtype": [["a", "<f8"]]}),
    "structured dtype with object": leaf_header({**GOOD, "dtype": {"names": ["a"], "formats": ["O"]}}),
    "malformed dtype dict": leaf_header({**GOOD, "dtype": {"names": 5}}),
    "dtype number": leaf_header({**GOOD, "dtype": 3}),
    "dtype nonsense": leaf_header({**GOOD, "dtype": "f99999999999999999999"}),
    "negative shape": leaf_header({**GOOD, "shape": [-2], "nbytes": -16}),
    "negative shape product": leaf_header({**GOOD, "shape": [-1, -2]}),
    "shape with a float": leaf_header({**GOOD, "shape": [2.0]}),
    "shape with a bool": leaf_header({**GOOD, "shape": [True, True], "nbytes": 8}),
    "shape a string": leaf_header({**GOOD, "shape": "ab"}),
    "shape a number": leaf_header({**GOOD, "shape": 2}),
    "shape null": leaf_header({**GOOD, "shape": None}),
    "oversized shape": leaf_header({**GOOD, "shape": [2**40, 2**40], "nbytes": 2**83}),
    "oversized shape with a zero": leaf_header({**GOOD, "shape": [0, 10**20], "nbytes": 0}),
    "huge shape product with a zero": leaf_header({**GOOD, "shape": [0, 2**62, 2**62], "nbytes": 0}),
    "too many axes": leaf_header({**GOOD, "shape": [1] * 65 + [2]}),
    "far too many axes": leaf_header({**GOOD, "shape": [1] * 10_000 + [2]}),
    "wrong nbytes": leaf_header({**GOOD, "nbytes": 8}),
    "offset past the end": leaf_header({**GOOD, "offset": 8}),
    "offset far past the end": leaf_header({**GOOD, "offset": 2**70}),
    "negative offset": leaf_header({**GOOD, "offset": -8}),
    "float offset": leaf_header({**GOOD, "offset": 0.0}),
    "bool offset": leaf_header({**GOOD, "offset": False}),
    "huge nbytes": leaf_header({**GOOD, "shape": [2**61], "nbytes": 2**64}),
    "leaf index out of range": leaf_header(GOOD, tree={"leaf": 1}),
    "negative leaf index": leaf_header(GOOD, tree={"leaf": -1}),
    "leaf index a string": leaf_header(GOOD, tree={"leaf": "0"}),
    "leaf used twice": leaf_header(GOOD, tree={"list": [{"leaf": 0}, {"leaf": 0}]}),
    "leaf unused": leaf_header(GOOD, tree={"dict": []}),
    "missing tree": {"version": 1, "leaves": [GOOD]},
    "tree a number": leaf_header(GOOD, tree=5),
    "tree empty dict": leaf_header(GOOD, tree={}),
    "unknown node kind": leaf_header(GOOD, tree={"set": [{"leaf": 0}]}),
    "two node kinds": leaf_header(GOOD, tree={"leaf": 0, "list": []}),
    "dict items not pairs": leaf_header(GOOD, tree={"dict": [["a"]]}),
    "dict with a non-str key": leaf_header(GOOD, tree={"dict": [[1, {"leaf": 0}]]}),
    "dict value not a list": leaf_header(GOOD, tree={"dict": "a"}),
    "duplicate dict keys": leaf_header(GOOD, tree={"dict": [["a", {"leaf": 0}], ["a", {"list": []}]]}),
    "list value not a list": leaf_header(GOOD, tree={"list": {"leaf": 0}}),
}


def deep_header(depth):
    tree = '{"list": [' * depth + '{"leaf": 0}' + "]}" * depth
    return ('{"version": 1, "leaves": [' + json.dumps(GOOD) + '], "tree": ' + tree + "}").encode()


@pytest.mark.parametrize("name", sorted(MALICIOUS))
def test_crafted_headers_with_valid_checksum_raise_only_checkpoint_error(tmp_path, name):
    path = tmp_path / "crafted.fnn"
    path.write_bytes(craft(MALICIOUS[name], DATA))
    only_checkpoint_error(path)


@pytest.mark.parametrize("depth", [900, 990, 3_000, 100_000])
def test_deeply_nested_headers_raise_only_checkpoint_error(tmp_path, depth):
    path = tmp_path / "deep.fnn"
    path.write_bytes(craft(deep_header(depth), DATA))
    only_checkpoint_error(path)


def test_crafted_baseline_is_accepted(tmp_path):
    """The crafting helper itself makes loadable files, so the failures above are the header's doing."""
    path = tmp_path / "ok.fnn"
    path.write_bytes(craft(leaf_header(GOOD), DATA))
    assert load(path).tolist() == [1.0, 2.0]
    path.write_bytes(craft(leaf_header(GOOD, tree=json.loads('{"list": [' * 50 + '{"leaf": 0}' + "]}" * 50)), DATA))
    assert load(path) is not None


def test_oversized_shapes_raise_checkpoint_error_not_numpy_value_error(tmp_path):
    """Regression: a header with a zero-size but oversized shape ([0, 10**20]) or more than 64 axes
    passed the size checks and numpy's reshape raised a plain ValueError."""
    for shape in ([0, 10**20], [1] * 65 + [2], [0, 2**62, 2**62]):
        path = tmp_path / "shape.fnn"
        path.write_bytes(craft(leaf_header({**GOOD, "shape": shape, "nbytes": 16 if 2 in shape else 0}), DATA))
        with pytest.raises(CheckpointError, match="malformed leaf entry|does not fit"):
            load(path)


def test_header_length_past_the_end_and_bad_magic(tmp_path):
    path = tmp_path / "x.fnn"
    body = b"FNNCKPT1" + struct.pack("<Q", 2**63) + b"{}"
    path.write_bytes(body + hashlib.sha256(body).digest())
    with pytest.raises(CheckpointError, match="header length .* runs past the end"):
        load(path)
    path.write_bytes(b"FNNCKPT2" + craft(leaf_header(GOOD), DATA)[8:])
    with pytest.raises(CheckpointError, match="not an fnn checkpoint"):
        load(path)
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match="not an fnn checkpoint"):
        load(path)
    path.write_bytes(craft(leaf_header(GOOD), DATA)[:-1] + b"\x00")
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        load(path)


class _Payload:
    """Unpickling this object would create the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_and_object_array_payloads_are_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    payload = _Payload(marker)
    # sanity: the payload really creates the marker when unpickled
    pickle.loads(pickle.dumps(payload)).close()
    assert marker.exists()
    marker.unlink()

    files = {}
    files["pickle.fnn"] = pickle.dumps({"w": payload})
    np.save(tmp_path / "obj.npy", np.array([payload, 1], dtype=object), allow_pickle=True)
    np.savez(tmp_path / "obj.npz", a=np.array([payload], dtype=object))
    files["obj.npy"] = (tmp_path / "obj.npy").read_bytes()
    files["obj.npz"] = (tmp_path / "obj.npz").read_bytes()
    files["magic+pickle.fnn"] = b"FNNCKPT1" + pickle.dumps(payload)
    # a pickle where the data block should be, behind a valid header and checksum
    blob = pickle.dumps(payload)
    files["pickle-in-data.fnn"] = craft(leaf_header({"dtype": "|O", "shape": [1], "offset": 0,
                                                     "nbytes": len(blob)}), blob)
    for name, raw in files.items():
        path = tmp_path / f"in-{name}"
        path.write_bytes(raw)
        only_checkpoint_error(path)
        if name != "pickle-in-data.fnn":  # load_metadata reads only the (valid) header of that one
            only_checkpoint_error(path, load_metadata)
        else:
            assert load_metadata(path) is None
        assert not marker.exists(), name


# ----------------------------------------------------------------------------------------------
# Atomic writes


def old_checkpoint(tmp_path):
    path = tmp_path / "model.fnn"
    tree = {"w": np.arange(4.0)}
    save(path, tree, metadata={"epoch": 1})
    return path, tree, path.read_bytes()


@pytest.mark.parametrize("crash", ["ascontiguousarray", "replace", "fsync", "interrupt"])
def test_a_crash_mid_save_keeps_the_old_checkpoint_and_leaves_no_temp_file(tmp_path, monkeypatch, crash):
    path, tree, before = old_checkpoint(tmp_path)

    class Crash(Exception):
        pass

    def boom(*args, **kwargs):
        raise KeyboardInterrupt if crash == "interrupt" else Crash("simulated crash")

    if crash in ("ascontiguousarray", "interrupt"):
        monkeypatch.setattr(ckpt.np, "ascontiguousarray", boom)
    else:
        monkeypatch.setattr(ckpt.os, crash, boom)
    new = {"w": np.zeros(1000), "b": np.ones(3)}
    with pytest.raises(KeyboardInterrupt if crash == "interrupt" else Crash):
        save(path, new, metadata={"epoch": 2})
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["model.fnn"]
    assert path.read_bytes() == before
    assert_bitwise_equal(load(path), tree)
    assert load_metadata(path) == {"epoch": 1}


def test_save_overwrites_and_leaves_no_temp_file(tmp_path):
    path, _, _ = old_checkpoint(tmp_path)
    save(path, {"v": np.ones(2)}, metadata="new")
    assert sorted(os.listdir(tmp_path)) == ["model.fnn"]
    assert load(path)["v"].tolist() == [1.0, 1.0] and load_metadata(path) == "new"


def test_save_accepts_str_and_pathlike_and_relative_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    save("rel.fnn", {"a": np.ones(1)})
    assert load("rel.fnn")["a"].tolist() == [1.0]
    assert sorted(os.listdir(tmp_path)) == ["rel.fnn"]


def test_missing_file_raises_os_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "absent.fnn")


@pytest.fixture
def umask():
    """Set the process umask for one test, restoring the old one afterwards."""
    old = os.umask(0o022)
    try:
        yield os.umask
    finally:
        os.umask(old)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664), (0o077, 0o600)],
                         ids=["umask-022", "umask-027", "umask-002", "umask-077"])
def test_saved_checkpoint_mode_follows_the_umask_like_open(tmp_path, umask, mask, mode):
    # Regression: a new checkpoint got 0o644 whatever the umask (mkstemp's 0o600, then a fixed chmod).
    umask(mask)
    path = tmp_path / "ckpt.fnn"
    fnn.save(path, {"w": np.ones(2)})
    with open(tmp_path / "plain.txt", "w"):
        pass
    assert path.stat().st_mode & 0o777 == mode == (tmp_path / "plain.txt").stat().st_mode & 0o777
    np.save(tmp_path / "plain.npy", np.ones(2))
    assert (tmp_path / "plain.npy").stat().st_mode & 0o777 == mode


@pytest.mark.parametrize("existing", [0o600, 0o640, 0o666], ids=["600", "640", "666"])
def test_overwriting_a_checkpoint_keeps_its_mode_whatever_the_umask(tmp_path, umask, existing):
    path, _, _ = old_checkpoint(tmp_path)
    path.chmod(existing)
    umask(0o027)
    save(path, {"v": np.ones(2)})
    assert path.stat().st_mode & 0o777 == existing
    assert sorted(os.listdir(tmp_path)) == ["model.fnn"]


def test_save_into_a_missing_directory_names_the_users_path(tmp_path):
    # Regression: the FileNotFoundError named the temporary file mkstemp tried to create.
    path = tmp_path / "no" / "such" / "dir" / "ckpt.fnn"
    match = (rf"^save: cannot write {re.escape(repr(str(path)))}: directory "
             rf"{re.escape(repr(str(path.parent)))} does not exist$")
    with pytest.raises(FileNotFoundError, match=match):
        save(path, {"w": np.ones(2)})
    assert os.listdir(tmp_path) == []


def test_save_into_a_path_below_a_file_names_the_users_path(tmp_path):
    (tmp_path / "file").write_bytes(b"")
    path = tmp_path / "file" / "ckpt.fnn"
    with pytest.raises(NotADirectoryError, match=rf"^save: cannot write {re.escape(repr(str(path)))}: cannot create "
                                                 rf"a file in directory {re.escape(repr(str(path.parent)))} \("):
        save(path, {"w": np.ones(2)})
    assert os.listdir(tmp_path) == ["file"]


def test_metadata_that_json_would_change_is_refused_at_save(tmp_path):
    with pytest.raises(fnn.CheckpointError, match="would not load back equal"):
        fnn.save(tmp_path / "c.fnn", {"w": np.ones(2)}, metadata={"pair": (1, 2)})
    with pytest.raises(fnn.CheckpointError, match="would not load back equal"):
        fnn.save(tmp_path / "c.fnn", {"w": np.ones(2)}, metadata={1: "a"})
