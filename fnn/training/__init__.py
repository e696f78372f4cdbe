"""Training as a library: the loss and its gradients in one call, a pure train step,
batched evaluation with metrics, and ``fit`` with callbacks and exact resume.

Each piece builds on the one before, and each can be used alone:

- :func:`~fnn.training.value_and_grad` ``(net, loss_fn)`` -> ``f(params, x, y) -> (loss, grads, state, outputs)``;
- :func:`~fnn.training.train_step` ``(net, loss_fn, opt)`` -> ``step(params, opt_state, state, (x, y), key)
  -> (params, opt_state, state, metrics)``, with gradient accumulation;
- :func:`~fnn.training.evaluate`: mean loss, accuracy, top-k accuracy, confusion matrix, in inference mode;
- :func:`~fnn.training.fit`: epochs of the step, evaluation, progress, callbacks (:class:`~fnn.training.EarlyStopping`,
  :class:`~fnn.training.ReduceLROnPlateau`, :class:`~fnn.training.Checkpoint`), ``resume=``.

All of them take ``world=`` (:mod:`fnn.distributed`) for data-parallel training.
"""

from fnn.training.callbacks import Callback, Checkpoint, EarlyStopping, ReduceLROnPlateau
from fnn.training.evaluation import EVALUATE_METRICS, evaluate
from fnn.training.loop import fit
from fnn.training.state import FitState, load_fit_state, save_fit_state
from fnn.training.step import LossAndGrads, LossFn, MetricFn, Metrics, Step, train_step, value_and_grad

__all__ = [
    "EVALUATE_METRICS",
    "Callback",
    "Checkpoint",
    "EarlyStopping",
    "FitState",
    "LossAndGrads",
    "LossFn",
    "MetricFn",
    "Metrics",
    "ReduceLROnPlateau",
    "Step",
    "evaluate",
    "fit",
    "load_fit_state",
    "save_fit_state",
    "train_step",
    "value_and_grad",
]
