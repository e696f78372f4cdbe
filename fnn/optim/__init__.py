"""Pure optimizers as ``(init, update)`` pairs on parameter trees, learning-rate schedules,
gradient clipping, and composable gradient transformations. Update rules and defaults
follow PyTorch's documentation.

- Optimizers: :func:`sgd`, :func:`adam`, :func:`adamw`, :func:`rmsprop`, :func:`adagrad`
  (:class:`Optimizer`: ``params, state = update(params, grads, state)``).
- Transforms (:class:`GradientTransformation`: ``updates, state = update(updates, state, params)``):
  :func:`clip_by_global_norm`, :func:`clip_by_value`, :func:`add_decayed_weights`,
  :func:`trace`, :func:`scale_by_adam`, :func:`scale_by_rms`, :func:`scale_by_adagrad`,
  :func:`scale_by_learning_rate`, :func:`scale`, :func:`identity`.
- Combinators: :func:`chain` (transforms, optionally ending with an optimizer),
  :func:`as_optimizer`, :func:`freeze` / :func:`masked`, :func:`multi_transform` (per-group
  hyperparameters), :func:`lr_multiplier` (a learning-rate factor in the state).

>>> opt = fnn.optim.chain(fnn.optim.clip_by_global_norm(1.0), fnn.optim.adamw(1e-3))
>>> params = {"w": np.ones((2, 2)), "b": np.zeros(2)}
>>> state = opt.init(params)
>>> params, state = opt.update(params, fnn.tree.map(np.ones_like, params), state)
"""

from fnn.optim.adaptive import adagrad, adam, adamw, rmsprop
from fnn.optim.base import DecayMask, GradientTransformation, Mask, Optimizer, Schedule, leafwise, weights_only
from fnn.optim.clip import clip_by_global_norm, clip_by_value
from fnn.optim.combine import apply_updates, as_optimizer, chain
from fnn.optim.masking import freeze, masked, multi_transform
from fnn.optim.multiplier import lr_multiplier
from fnn.optim.schedules import constant, cosine, exponential, step_decay
from fnn.optim.sgd import sgd
from fnn.optim.transforms import (
    add_decayed_weights,
    identity,
    scale,
    scale_by_adagrad,
    scale_by_adam,
    scale_by_learning_rate,
    scale_by_rms,
    trace,
)

__all__ = [
    "DecayMask",
    "GradientTransformation",
    "Mask",
    "Optimizer",
    "Schedule",
    "adagrad",
    "adam",
    "adamw",
    "add_decayed_weights",
    "apply_updates",
    "as_optimizer",
    "chain",
    "clip_by_global_norm",
    "clip_by_value",
    "constant",
    "cosine",
    "exponential",
    "freeze",
    "identity",
    "leafwise",
    "lr_multiplier",
    "masked",
    "multi_transform",
    "rmsprop",
    "scale",
    "scale_by_adagrad",
    "scale_by_adam",
    "scale_by_learning_rate",
    "scale_by_rms",
    "sgd",
    "step_decay",
    "trace",
    "weights_only",
]
