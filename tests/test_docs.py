"""The code in the docs runs: docs/adding-a-layer.md's template passes check_layer."""

import re
from pathlib import Path

import numpy as np

import fnn
from fnn.testing import check_layer

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_the_layer_template_passes_the_whole_contract():
    text = (DOCS / "adding-a-layer.md").read_text()
    namespace: dict = {}
    exec(re.search(r"```python\n(.*?)```", text, re.S).group(1), namespace)  # noqa: S102 (our own docs)
    layer = namespace["Scale"](2.0)
    y, _ = layer.apply(layer.init(fnn.random.key(0), (3,)), np.ones((1, 3), np.float32))
    np.testing.assert_array_equal(y, [[2, 2, 2]])
    assert set(check_layer(layer, (2, 3))) == set(fnn.testing.CHECKS)
