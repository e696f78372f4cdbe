"""Doctest namespace for the docstrings in fnn/: 'np' and 'fnn' are predefined."""

import numpy as np
import pytest

import fnn


@pytest.fixture(autouse=True)
def _doctest_namespace(doctest_namespace):
    doctest_namespace["np"] = np
    doctest_namespace["fnn"] = fnn
