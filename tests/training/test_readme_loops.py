"""README's "Training loops" runs as written: fit prints the line it shows, and the hand-written
loop ends with bitwise the params fit returned."""

import re
from pathlib import Path

import numpy as np

import fnn

README = Path(__file__).resolve().parent.parent.parent / "README.md"


def test_the_readme_fit_and_its_loop_by_hand_give_the_same_bits(tmp_path, monkeypatch, capsys):
    text = README.read_text()
    section = text[text.index("## Training loops"):]
    section = section[:section.index("\n## ")]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 2
    monkeypatch.chdir(tmp_path)  # Checkpoint("runs/quick") writes there
    namespace: dict = {}
    exec(blocks[0], namespace)  # noqa: S102 (our own README)
    fit_lines = capsys.readouterr().out.splitlines()
    claimed = re.search(r"ends with `(epoch 10/10 [^`]*)`", section).group(1)
    assert fit_lines[-1].startswith(claimed)
    exec(blocks[1], namespace)  # noqa: S102
    assert len(capsys.readouterr().out.splitlines()) == 10
    for a, b in zip(fnn.tree.leaves(namespace["p"]), fnn.tree.leaves(namespace["result"].params)):
        np.testing.assert_array_equal(a, b)
    assert (tmp_path / "runs" / "quick" / "best.fnn").exists()
