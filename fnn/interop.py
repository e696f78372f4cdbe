"""Weights to and from PyTorch ``state_dict``s. torch is never imported: state dicts here
are dicts of numpy arrays (``{k: v.numpy() for k, v in model.state_dict().items()}``).

fnn walks its layers in order, skipping those without parameters or state, and pairs
them with the module prefixes of the state dict (``"0"``, ``"conv1"``, ``"features.3"``):

- by name, when fnn's layer paths joined with ``"."`` are exactly the module prefixes
  (name fnn's layers after the modules: ``fnn.serial(("conv1", Conv2D(6, 5)), ...)``;
  a name may hold dots, ``("features.3", Dense(4))``);
- otherwise by order: the i-th fnn layer with the i-th prefix. A state dict lists
  modules in the order they were registered, which need not be the order they run in,
  so order matching is refused (``ValueError``) wherever two modules have parameters of
  the same names and shapes, unless their prefixes first differ at two indices
  (``"body.0"`` and ``"body.2"``, ``"0.fc"`` and ``"1.fc"``): the children of an
  ``nn.Sequential`` (or ``nn.ModuleList``) are named by index and run in index order.

Kinds and shapes must agree. Conversions:

============  =======================================================================
fnn           PyTorch
============  =======================================================================
Dense         ``weight`` (out, in) = ``w.T``; ``bias`` = ``b``
Conv2D        ``weight`` = ``w``; ``bias`` = ``b``
BatchNorm     ``weight`` = ``gamma``; ``bias`` = ``beta``; ``running_mean``/``running_var`` = state
LayerNorm     ``weight`` = ``gamma``; ``bias`` = ``beta``
RNN/LSTM/GRU  ``weight_ih_l0[_reverse]`` = ``w_ih.T``, ``weight_hh_l0`` = ``w_hh.T``, biases as they are
Embedding     ``weight`` = ``weight`` (and PositionEmbedding's, as an ``nn.Embedding(max_len, E)``)
MultiHead-    ``in_proj_weight``, ``in_proj_bias``, ``out_proj.weight``, ``out_proj.bias`` as they are
Attention     (``nn.MultiheadAttention(E, H, batch_first=True)``)
Transformer-  ``self_attn.*``, ``linear1``, ``linear2`` (as Dense), ``norm1``, ``norm2`` (as LayerNorm):
EncoderLayer  its sub-layers are named by their own names only, as in ``nn.TransformerEncoderLayer``
tie           the tied target is the source in both directions: a PyTorch model ties by sharing one
              tensor, and its state dict lists it under both names (``tok.weight``, ``head.weight``);
              loading checks that the two agree
============  =======================================================================
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from fnn import random as _random
from fnn import tree as _tree
from fnn.core import INITIAL_STATE, Layer, example_batch
from fnn.layers.transformer import encoder_body
from fnn.tying import node_at, tie_spec, untie

__all__ = ["from_torch_state_dict", "to_torch_state_dict"]

_SIMPLE = {
    "Dense": {"weight": ("w", True), "bias": ("b", False)},
    "Conv2D": {"weight": ("w", False), "bias": ("b", False)},
    "BatchNorm": {"weight": ("gamma", False), "bias": ("beta", False)},
    "LayerNorm": {"weight": ("gamma", False), "bias": ("beta", False)},
    "Embedding": {"weight": ("weight", False)},
    "PositionEmbedding": {"weight": ("weight", False)},
    "MultiHeadAttention": {"in_proj_weight": ("in_proj_weight", False), "in_proj_bias": ("in_proj_bias", False)},
    "MultiHeadAttention.out_proj": {"weight": ("weight", False), "bias": ("bias", False)},
}
_RECURRENT = ("RNN", "LSTM", "GRU")
_RNN_NAMES = {"weight_ih": ("w_ih", True), "weight_hh": ("w_hh", True), "bias_ih": ("b_ih", False),
              "bias_hh": ("b_hh", False)}


class _Slot(NamedTuple):
    path: tuple[str, ...]
    family: str
    params: Any
    state: Any


def _family(layer: Layer) -> str:
    return layer.kind.split("(", 1)[0]


Tie = tuple[np.ndarray, np.ndarray, bool, str]
"""A tied pair among the slots' leaves: ``(target, source, transpose, description)``."""


def _slots(layer: Layer, params: Any, state: Any, path: tuple[str, ...], ties: list[Tie] | None = None,
           flat: bool = False) -> list[_Slot]:
    """The layers with parameters or state under ``layer``, in order. A tied layer's target is
    the source array (``ties`` records the pair); under a TransformerEncoderLayer (``flat``) the
    slots are named by their own names only, as PyTorch's modules."""
    spec = tie_spec(layer)
    if spec is not None:
        net, full = untie(layer, params)
        if ties is not None:
            where = f"{'/'.join(path + spec.target)!r} to {'/'.join(path + spec.source)!r}"
            ties.append((node_at(full, spec.target), node_at(full, spec.source), spec.transpose, where))
        return _slots(net, full, state, path, ties, flat)
    family = _family(layer)
    if family == "TransformerEncoderLayer":
        return _slots(encoder_body(layer, params), params, state, path, ties, flat=True)
    if layer.children:
        out: list[_Slot] = []
        for name, child in layer.children:
            sub = path if flat and child.children else path + (name,)
            out += _slots(child, params[name], (state or {}).get(name), sub, ties, flat)
        return out
    if not _tree.leaves(params) and not state:
        return []
    if family == "MultiHeadAttention":
        return [_Slot(path, family, params, {}), _Slot(path + ("out_proj",), f"{family}.out_proj",
                                                       params["out_proj"], {})]
    if family not in _SIMPLE and family not in _RECURRENT:
        raise TypeError(f"interop: layer {'/'.join(path)} ({layer.kind}) has no PyTorch mapping")
    return [_Slot(path, family, params, state or {})]


def _torch_names(slot: _Slot) -> dict[str, tuple[tuple[str, ...], bool]]:
    """PyTorch suffix -> (fnn key path inside the slot, transpose?)."""
    if slot.family in _RECURRENT:
        return {f"{base}_{entry}": ((entry, key), t) for entry in slot.params
                for base, (key, t) in _RNN_NAMES.items()}
    names: dict[str, tuple[tuple[str, ...], bool]] = {
        tn: ((key,), t) for tn, (key, t) in _SIMPLE[slot.family].items() if key in slot.params}
    if slot.family == "BatchNorm":
        names.update({"running_mean": (("state", "mean"), False), "running_var": (("state", "var"), False)})
    return names


def _get(slot: _Slot, where: tuple[str, ...]) -> np.ndarray:
    node = slot.state if where[0] == "state" else slot.params
    for k in where[1:] if where[0] == "state" else where:
        node = node[k]
    return node


def _groups(state_dict: dict[str, Any]) -> list[tuple[str, dict[str, np.ndarray]]]:
    groups: dict[str, dict[str, np.ndarray]] = {}
    for key, value in state_dict.items():
        prefix, _, suffix = key.rpartition(".")
        if suffix == "num_batches_tracked":
            continue
        groups.setdefault(prefix, {})[suffix] = np.asarray(value)
    return list(groups.items())


def _in_run_order(a: str, b: str) -> bool:
    """Whether module ``a``, listed before ``b``, surely runs first: their prefixes first
    differ at two indices, as children of an ``nn.Sequential`` do."""
    for x, y in zip(a.split("."), b.split(".")):
        if x != y:
            return x.isdecimal() and y.isdecimal()
    return False


def _match(where: str, what: str, slots: list[_Slot], groups: list[tuple[str, dict[str, np.ndarray]]]
           ) -> list[tuple[_Slot, str, dict[str, np.ndarray]]]:
    """Pair fnn's layers with the state dict's modules, by name or else by an unambiguous order."""
    if len(slots) != len(groups):
        raise ValueError(f"{where}: fnn has {len(slots)} layers with parameters "
                         f"({', '.join('/'.join(s.path) for s in slots)}) but the {what} has {len(groups)} "
                         f"module prefixes ({', '.join(repr(g) for g, _ in groups)})")
    by_name = {".".join(s.path): s for s in slots}
    if set(by_name) == {prefix for prefix, _ in groups}:
        return [(by_name[prefix], prefix, tensors) for prefix, tensors in groups]
    shapes = [sorted((k, v.shape) for k, v in tensors.items()) for _, tensors in groups]
    clash = {k for i in range(len(groups)) for j in range(i + 1, len(groups))
             if shapes[i] == shapes[j] and not _in_run_order(groups[i][0], groups[j][0]) for k in (i, j)}
    if clash:
        modules = ", ".join(repr(groups[i][0]) for i in sorted(clash))
        layers = ", ".join("/".join(slots[i].path) for i in sorted(clash))
        raise ValueError(f"{where}: modules {modules} of the {what} have parameters of the same names and shapes, "
                         f"so matching them by order to fnn layers {layers} is ambiguous (a state dict lists "
                         f"modules in the order they were registered, not the order they run in); name the fnn "
                         f"layers after the torch modules, so that fnn's layer paths joined with '.' are the "
                         f"module prefixes ({', '.join(repr(g) for g, _ in groups)})")
    return [(slot, prefix, tensors) for slot, (prefix, tensors) in zip(slots, groups)]


def _fresh(layer: Layer, shape: Any, dtype: Any) -> tuple[Any, Any]:
    params = layer.init(_random.key(0), shape, dtype)
    return params, layer.apply(params, example_batch(layer, shape, dtype), state=INITIAL_STATE).state


def from_torch_state_dict(layer: Layer, state_dict: dict[str, Any], shape: Any,
                          dtype: Any = np.float32) -> tuple[Any, Any]:
    """``(params, state)`` for ``layer`` (examples of ``shape``) from a PyTorch state dict of
    numpy arrays, matched by name or by an unambiguous order (see the module docstring);
    a ``ValueError`` names the first mismatch."""
    params, state = _fresh(layer, shape, dtype)
    ties: list[Tie] = []
    pairs = _match("from_torch_state_dict", "state dict", _slots(layer, params, state, (), ties), _groups(state_dict))
    new_leaves: dict[int, np.ndarray] = {}
    for slot, prefix, tensors in pairs:
        names = _torch_names(slot)
        if set(tensors) != set(names):
            raise ValueError(f"from_torch_state_dict: fnn layer {'/'.join(slot.path)} ({slot.family}) needs "
                             f"{sorted(names)} but module {prefix!r} has {sorted(tensors)}")
        for tname, (where, transpose) in names.items():
            target = _get(slot, where)
            value = tensors[tname].T if transpose else tensors[tname]
            if value.shape != target.shape:
                raise ValueError(f"from_torch_state_dict: {prefix}.{tname} has shape {tensors[tname].shape}, "
                                 f"which does not fit fnn layer {'/'.join(slot.path)} {where} of shape "
                                 f"{target.shape}{' (transposed)' if transpose else ''}")
            new_leaves[id(target)] = np.array(value, dtype=target.dtype)
    for tied, shared, transposed, pair in ties:
        a, b = new_leaves.get(id(tied)), new_leaves.get(id(shared))
        if a is not None and b is not None and not np.array_equal(a, b.T if transposed else b):
            raise ValueError(f"from_torch_state_dict: fnn ties {pair}, but the state dict holds different values "
                             f"for them (a PyTorch model whose weights are not tied?)")

    def swap(leaf: Any) -> Any:
        return new_leaves.get(id(leaf), leaf)

    return _tree.map(swap, params), _tree.map(swap, state)


def to_torch_state_dict(layer: Layer, params: Any, shape: Any, state: Any = None,
                        template: dict[str, Any] | None = None) -> dict[str, np.ndarray]:
    """A PyTorch-style state dict (numpy arrays) for ``params`` (and ``state``).

    Keys come from ``template`` (a state dict of the target model, matched by name or by an
    unambiguous order as in :func:`from_torch_state_dict`) or, without one, from fnn's layer
    names joined with ``"."``.
    """
    reference = layer.init(_random.key(0), shape)
    _tree.check_same_structure(reference, params, names=["the layer's params", "params"], shapes=True,
                               where="to_torch_state_dict")
    if state is None or (isinstance(state, dict) and not state):
        leaves = _tree.leaves(params)
        state = _fresh(layer, shape, leaves[0].dtype if leaves else np.float32)[1]
    slots = _slots(layer, params, state, ())
    pairs: list[tuple[_Slot, str, dict[str, np.ndarray] | None]]
    if template is None:
        pairs = [(s, ".".join(s.path), None) for s in slots]
    else:
        pairs = list(_match("to_torch_state_dict", "template", slots, _groups(template)))
    out: dict[str, np.ndarray] = {}
    for slot, prefix, tensors in pairs:
        names = _torch_names(slot)
        path = "/".join(slot.path)
        if tensors is not None and set(tensors) != set(names):
            raise ValueError(f"to_torch_state_dict: fnn layer {path} ({slot.family}) gives {sorted(names)} but "
                             f"template module {prefix!r} has {sorted(tensors)}")
        for tname, (where, transpose) in names.items():
            value = _get(slot, where)
            key = f"{prefix}.{tname}" if prefix else tname
            out[key] = np.ascontiguousarray(value.T if transpose else value)
            if tensors is not None and tensors[tname].shape != out[key].shape:
                raise ValueError(f"to_torch_state_dict: fnn layer {path} {where} gives {key} of shape "
                                 f"{out[key].shape}, which does not match the template's {tensors[tname].shape}")
        if slot.family == "BatchNorm":
            out[f"{prefix}.num_batches_tracked" if prefix else "num_batches_tracked"] = np.array(0, np.int64)
    return out
