"""CI's smoke check of the installed wheel (.ci/run copies this file into an empty folder and runs it
there with a fresh venv's ``python -I``): fnn must import from that venv's site-packages and work
without the source tree, examples, tests or ../shared.

Prints the version and location, imports every module of the package (numpy is the only
dependency), runs one ``check_layer``, one SGD and one Adam step of a small
classifier, and a ``save``/``load`` round trip; exits non-zero on any failure.
"""

import importlib
import pkgutil
import sysconfig
import tempfile
from pathlib import Path

import numpy as np

import fnn
from fnn.layers import Dense, ReLU

site = Path(sysconfig.get_paths()["purelib"]).resolve()
where = Path(fnn.__file__).resolve()
print(f"fnn {fnn.__version__} imported from {where}")
if site not in where.parents:
    raise SystemExit(f"smoke: fnn was imported from {where}, not from this venv's site-packages {site}")
if not (where.parent / "py.typed").is_file():
    raise SystemExit("smoke: the installed package has no py.typed")

modules = [m.name for m in pkgutil.walk_packages(fnn.__path__, "fnn.")]
for name in modules:
    importlib.import_module(name)
print(f"imported fnn and its {len(modules)} submodules")

checks = fnn.testing.check_layer(Dense(3), (4,))
print(f"check_layer(Dense(3), (4,)): {len(checks)} checks passed ({', '.join(checks)})")

net = fnn.serial(Dense(8), ReLU(), Dense(3))
params = net.init(fnn.random.key(0), (4,))
x = fnn.random.normal(fnn.random.key(1), (16, 4))
labels = np.arange(16) % 3
for name, opt in [("sgd", fnn.optim.sgd(0.1)), ("adam", fnn.optim.adam(1e-2))]:
    opt_state = opt.init(params)
    logits, vjp = net.apply(params, x)
    loss, dlogits = fnn.losses.softmax_cross_entropy(logits, labels)
    grads, _ = vjp(dlogits)
    new_params, opt_state = opt.update(params, grads, opt_state)
    new_loss, _ = fnn.losses.softmax_cross_entropy(net.apply(new_params, x)[0], labels)
    print(f"one {name} step: loss {loss:.4f} -> {new_loss:.4f}")
    if not new_loss < loss:
        raise SystemExit(f"smoke: one {name} step did not lower the loss")

tree = {"params": new_params, "opt_state": opt_state}
with tempfile.TemporaryDirectory() as tmp:
    path = Path(tmp) / "smoke.fnn"
    fnn.save(path, tree, metadata={"step": 1})
    back = fnn.load(path, like=tree)
    metadata = fnn.load_metadata(path)
leaves, _ = fnn.tree.flatten(tree)
back_leaves, _ = fnn.tree.flatten(back)
same = len(leaves) == len(back_leaves) and all(
    p == q and np.asarray(a).dtype == np.asarray(b).dtype and np.array_equal(a, b)
    for (p, a), (q, b) in zip(leaves, back_leaves)
)
if not same or metadata != {"step": 1}:
    raise SystemExit("smoke: fnn.load did not give back what fnn.save wrote")
print(f"fnn.save / fnn.load: {len(leaves)} arrays and the metadata round-trip bitwise")
print("smoke check: ok")
