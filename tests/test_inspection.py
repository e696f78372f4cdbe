"""fnn.inspection (fnn.summary): parameter counts and the bytes each vjp closure keeps, against independent counts."""

import numpy as np
import pytest

import fnn
from fnn import random
from fnn.core import ShapeDtype
from fnn.inspection import Row, closure_arrays, format_rows
from fnn.layers import AvgPool2D, Conv2D, Dense, Dropout, Flatten, GlobalAvgPool2D, Identity, MaxPool2D, ReLU, Tanh

F32 = 4


def lenet(**conv):
    return fnn.serial(Conv2D(6, 5, padding=2, **conv), ReLU(), MaxPool2D(2), Conv2D(16, 5, **conv), ReLU(),
                      MaxPool2D(2), Flatten(), Dense(120), ReLU(), Dense(84), ReLU(), Dense(10))


def lenet_expected(n, keep_columns=False):
    """``{name: (params, cached bytes)}`` for LeNet-5 on (1, 28, 28) at batch ``n``, counted by hand: each
    Conv2D keeps its input (the default) or, with ``keep_columns`` (``recompute=False``), its column matrix."""
    act = lambda *shape: int(np.prod(shape)) * n * F32  # noqa: E731  an activation, float32
    conv = lambda c, k, oh, ow, h: (c * k * k * oh * ow * n * F32 if keep_columns  # noqa: E731
                                    else act(c, h, h))
    argmax = lambda *shape: int(np.prod(shape)) * n  # noqa: E731  uint8 argmax offsets
    return {
        "conv2d_0": (6 * 1 * 5 * 5 + 6, conv(1, 5, 28, 28, 28)),
        "relu_0": (0, act(6, 28, 28)),  # ReLU keeps its output
        "max_pool2d_0": (0, argmax(6, 14, 14)),
        "conv2d_1": (16 * 6 * 5 * 5 + 16, conv(6, 5, 10, 10, 14)),
        "relu_1": (0, act(16, 10, 10)),
        "max_pool2d_1": (0, argmax(16, 5, 5)),
        "flatten_0": (0, 0),  # only the shape
        "dense_0": (400 * 120 + 120, act(400)),  # Dense keeps its input
        "relu_2": (0, act(120)),
        "dense_1": (120 * 84 + 84, act(120)),  # the same buffer as relu_2's output
        "relu_3": (0, act(84)),
        "dense_2": (84 * 10 + 10, act(84)),  # the same buffer as relu_3's output
    }


@pytest.fixture(scope="module")
def lenet_rows():
    return fnn.summary(lenet(), (1, 28, 28), 128, print_fn=None)


def test_lenet_parameter_count_and_bytes(lenet_rows):
    model, total = lenet_rows[0], lenet_rows[-1]
    assert model.params == total.params == 61_706
    assert model.param_bytes == total.param_bytes == 246_824 == 61_706 * F32
    assert model.output_shape == (128, 10)
    assert total.name == "total" and total.kind == ""


def test_lenet_rows_cache_what_each_closure_holds(lenet_rows):
    expected = lenet_expected(128)
    layers = lenet_rows[1:-1]
    assert [r.name for r in layers] == list(expected)
    assert all(r.depth == 1 for r in layers)
    for row in layers:
        params, cached = expected[row.name]
        assert (row.params, row.param_bytes, row.cached_bytes) == (params, params * F32, cached), row
    assert lenet_rows[1].cached_bytes == 401_408  # conv1's input: 1 * 28 * 28 * 128 * 4
    shapes = {r.name: r.output_shape for r in layers}
    assert shapes["conv2d_0"] == (128, 6, 28, 28) and shapes["max_pool2d_1"] == (128, 16, 5, 5)
    assert shapes["flatten_0"] == (128, 400)


def test_lenet_rows_with_the_columns_kept():
    rows = fnn.summary(lenet(recompute=False), (1, 28, 28), 128, print_fn=None)
    assert {r.name: (r.params, r.cached_bytes) for r in rows[1:-1]} == lenet_expected(128, keep_columns=True)
    assert rows[1].cached_bytes == 10_035_200  # conv1's column matrix: 1 * 5 * 5 * 28 * 28 * 128 * 4


def test_lenet_total_counts_each_buffer_once(lenet_rows):
    expected = lenet_expected(128)
    total = lenet_rows[-1].cached_bytes
    row_sum = sum(r.cached_bytes for r in lenet_rows[1:-1])
    # relu_2's and relu_3's outputs are the inputs Dense(84) and Dense(10) keep: counted once
    assert total == row_sum - expected["relu_2"][1] - expected["relu_3"][1] < row_sum
    assert lenet_rows[0].cached_bytes == total


def test_total_equals_the_union_of_the_buffers_of_every_layer():
    net = lenet()
    params = net.init(random.key(0), (1, 28, 28))
    x = random.normal(random.key(1), (8, 1, 28, 28))
    _, vjp = net.apply(params, x)
    param_ids = {id(p) for p in fnn.tree.leaves(params)}
    union = {}
    for _, child, _ in vjp.children:
        union.update({i: a for i, a in closure_arrays(child).items() if i not in param_ids})
    rows = fnn.summary(net, (1, 28, 28), 8, params=params, print_fn=None)
    assert rows[-1].cached_bytes == sum(a.nbytes for a in union.values())
    assert rows[-1].cached_bytes <= sum(r.cached_bytes for r in rows[1:-1])
    assert [r.cached_bytes for r in rows[1:-1]] == [v for _, v in lenet_expected(8).values()]


def test_printed_table(capsys):
    rows = fnn.summary(lenet(), (1, 28, 28), 128)
    out = capsys.readouterr().out
    assert "61,706" in out and "246,824" in out and "401,408" in out
    assert "cached bytes (N=128)" in out
    lines = out.splitlines()
    assert len(lines) == len(rows) + 3  # header, two rules
    assert lines[2].startswith("model ") and lines[3].startswith("  conv2d_0 ")
    assert lines[-1].startswith("total ")
    assert out.rstrip("\n") == format_rows(rows, 128)


def test_print_fn_none_prints_nothing_and_returns_rows(capsys):
    rows = fnn.summary(fnn.serial(Dense(3), ReLU()), (4,), print_fn=None)
    assert capsys.readouterr().out == ""
    assert all(isinstance(r, Row) for r in rows) and [r.name for r in rows] == ["model", "dense_0", "relu_0", "total"]


def test_print_fn_receives_the_table():
    lines = []
    fnn.summary(fnn.serial(Dense(3), ReLU()), (4,), print_fn=lines.append)
    assert len(lines) == 1 and "dense_0" in lines[0] and "15" in lines[0]


def test_nested_combinators_appear_indented_with_depth():
    net = fnn.serial(Dense(4), ("res", fnn.residual(fnn.serial(Dense(4), Tanh()))), fnn.fan_out(2),
                     fnn.parallel(Dense(2), Identity()), fnn.fan_in_concat(), fnn.fan_out(2), fnn.fan_in_sum())
    lines = []
    rows = fnn.summary(net, (3,), 10, dtype=np.float64, print_fn=lines.append)
    got = [(r.name, r.depth) for r in rows]
    assert got == [("model", 0), ("dense_0", 1), ("res", 1), ("inner", 2), ("dense_0", 3), ("tanh_0", 3),
                   ("fan_out_0", 1), ("parallel_0", 1), ("dense_0", 2), ("identity_0", 2), ("fan_in_concat_0", 1),
                   ("fan_out_1", 1), ("fan_in_sum_0", 1), ("total", 0)]
    table = lines[0].splitlines()
    for row, line in zip(rows[:-1], table[2:-2]):
        assert line.startswith("  " * row.depth + row.name + " ")
    by = {(r.name, r.depth): r for r in rows}
    assert by[("parallel_0", 1)].output_shape == ((10, 2), (10, 4))
    assert by[("res", 1)].params == by[("inner", 2)].params == 4 * 4 + 4
    # a combinator caches what its subtree caches
    assert by[("res", 1)].cached_bytes == by[("inner", 2)].cached_bytes == 2 * 10 * 4 * 8
    assert by[("parallel_0", 1)].cached_bytes == by[("dense_0", 2)].cached_bytes == 10 * 4 * 8
    # the merges and fan-outs keep no activations
    assert by[("fan_out_0", 1)].cached_bytes == 0 and by[("fan_in_sum_0", 1)].cached_bytes == 0
    assert by[("identity_0", 2)].cached_bytes == 0


def test_layers_that_need_only_a_shape_keep_no_activation():
    # Regression: AvgPool2D, GlobalAvgPool2D and fan_in_sum kept their whole input alive for its shape or length.
    for layer, shape in [(AvgPool2D(2), (2, 4, 4)), (GlobalAvgPool2D(), (2, 4, 4)), (Flatten(), (2, 3)),
                         (fnn.fan_in_sum(), ((3,), (3,))), (Identity(), (3,))]:
        rows = fnn.summary(layer, shape, 16, print_fn=None)
        assert rows[0].cached_bytes == 0, layer


def test_dropout_in_training_keeps_its_boolean_mask():
    rows = fnn.summary(fnn.serial(Dense(5), Dropout(0.5)), (3,), 7, train=True, key=random.key(3), print_fn=None)
    assert [r.cached_bytes for r in rows] == [7 * 3 * F32 + 7 * 5, 7 * 3 * F32, 7 * 5, 7 * 3 * F32 + 7 * 5]
    eval_rows = fnn.summary(fnn.serial(Dense(5), Dropout(0.5)), (3,), 7, print_fn=None)
    assert eval_rows[2].cached_bytes == 0


def test_float64_doubles_the_bytes():
    rows32 = fnn.summary(fnn.serial(Dense(3), Tanh()), (4,), 5, print_fn=None)
    rows64 = fnn.summary(fnn.serial(Dense(3), Tanh()), (4,), 5, dtype=np.float64, print_fn=None)
    assert [2 * r.param_bytes for r in rows32] == [r.param_bytes for r in rows64]
    assert [2 * r.cached_bytes for r in rows32] == [r.cached_bytes for r in rows64]


def test_summary_with_given_params_uses_them_and_does_not_count_them_as_cached():
    net = fnn.serial(Dense(3), Dense(2))
    params = net.init(random.key(5), (4,))
    rows = fnn.summary(net, (4,), 6, params=params, print_fn=None)
    assert rows[1].cached_bytes == 6 * 4 * F32 and rows[2].cached_bytes == 6 * 3 * F32
    with pytest.raises(ValueError, match="Dense"):
        fnn.summary(net, (5,), 6, params=params, print_fn=None)


def token_model(vocab=11, e=8, ff=12, classes=3):
    from fnn.layers import Embedding, TransformerEncoderLayer

    return fnn.serial(Embedding(vocab, e), TransformerEncoderLayer(2, ff, dropout=0.0), Dense(classes))


@pytest.mark.parametrize("dtype, size", [(np.float32, 4), (np.float64, 8)])
def test_a_model_that_takes_token_indices_runs_on_an_index_batch(dtype, size):
    """Regression: summary fed float inputs to every model, so any model with an Embedding first raised
    a TypeError."""
    vocab, e, ff, classes, n, t = 11, 8, 12, 3, 5, 7
    rows = fnn.summary(token_model(vocab, e, ff, classes), (t,), n, dtype=dtype, print_fn=None)
    by_name = {r.name: r for r in rows}
    assert list(by_name) == ["model", "embedding_0", "transformer_encoder_layer_0", "dense_0", "total"]
    assert [r.output_shape for r in rows[1:-1]] == [(n, t, e), (n, t, e), (n, t, classes)]
    block = 3 * e * e + 3 * e + e * e + e + 2 * 2 * e + e * ff + ff + ff * e + e  # attention, 2 norms, FF
    assert [r.params for r in rows[1:-1]] == [vocab * e, block, e * classes + classes]
    assert rows[0].params == rows[-1].params == vocab * e + block + e * classes + classes
    assert rows[0].param_bytes == rows[0].params * size  # the params take dtype; the indices stay int64
    assert by_name["embedding_0"].cached_bytes == n * t * 8  # the int64 indices, for the scatter-add backward


def test_index_batches_stay_within_the_table_and_reach_a_tied_model():
    from fnn.layers import Embedding

    # a 2-row table over 400 draws: an index out of range would raise in Embedding's apply
    rows = fnn.summary(fnn.serial(Embedding(2, 3), Dense(2)), (20,), 20, key=random.key(7), print_fn=None)
    assert rows[0].output_shape == (20, 20, 2)
    tied = fnn.tie(fnn.serial(("tok", Embedding(6, 4)), ("head", Dense(6, bias=False))), target="head/w",
                   source="tok/weight", transpose=True)
    rows = fnn.summary(tied, (3,), 2, print_fn=None)
    assert rows[0].output_shape == (2, 3, 6) and rows[0].params == 6 * 4  # the shared table counted once
    params = tied.init(random.key(1), (3,), np.float64)
    assert fnn.summary(tied, (3,), 2, params=params, print_fn=None)[0].param_bytes == 6 * 4 * 8


def test_closure_arrays_on_a_hand_made_closure():
    a = np.zeros(10)
    big = np.zeros((4, 5), np.float32)
    view = big[1:3, ::2]
    b = np.ones(3, np.int8)
    spec = ShapeDtype((100, 100), np.dtype(np.float64))

    def make():
        nested = {"k": [view, (a, 3, "text")], "spec": spec}

        def inner():
            return a, b

        child_array = np.arange(6)

        def child_vjp():
            return child_array

        inner.children = [("c", child_vjp, spec)]

        def recurse():  # a closure that refers to itself must not loop forever
            return recurse, nested, inner, view

        return recurse, child_array

    fn, child_array = make()
    found = closure_arrays(fn)
    assert set(found) == {id(a), id(big), id(b), id(child_array)}  # the view counts as the buffer it keeps alive
    assert found[id(big)] is big
    assert sum(v.nbytes for v in found.values()) == 10 * 8 + 4 * 5 * 4 + 3 + 6 * 8


def test_closure_arrays_of_a_closure_without_arrays_and_with_an_empty_cell():
    def outer():
        def f():
            return later  # noqa: F821  a free variable not yet assigned: an empty cell

        assert closure_arrays(f) == {}
        later = np.zeros(2)
        return f

    f = outer()
    assert list(closure_arrays(f).values())[0].shape == (2,)
    assert closure_arrays(lambda: 1) == {}


def test_the_module_and_the_function_are_both_reachable_after_import_fnn() -> None:
    """Regression: ``fnn.summary`` (the function) used to shadow its own module ``fnn.summary``."""
    import fnn as f

    assert callable(f.summary) and f.inspection.summary is f.summary
    assert f.inspection.closure_arrays is closure_arrays
    assert callable(f.testing.check_layer)  # fnn.testing needs no import of its own
