"""Smoke tests for the token examples, ``examples/transformer_digits.py`` and ``examples/char_gpt.py``:
each runs end to end on a tiny setting, prints its figures, writes no files unless asked, and a run
stopped with ``--stop-after`` and continued with ``--resume`` ends bitwise where the uninterrupted
run ends. Scripts run as subprocesses from a temporary directory, as in ``tests/test_examples.py``.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
from example_scripts import PNG, launch

DIGITS = ("--epochs", "2", "--limit", "96", "--batch-size", "32")
GPT = ("--steps", "4", "--warmup", "1", "--eval-every", "2", "--batch-size", "4",
       "--sample", "30")


def run(script: str, *args: str, cwd: Path) -> str:
    proc = launch(script, *args, cwd=cwd)
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def files_under(folder: Path) -> set[Path]:
    return {p.relative_to(folder) for p in folder.rglob("*") if "__pycache__" not in p.parts}


def same_bits(a: Path, b: Path) -> None:
    """Two checkpoints of fnn.fit's format hold bitwise the same run (all but the epoch times)."""
    import fnn

    x, y = fnn.load(a), fnn.load(b)
    fnn.tree.check_same_structure(x, y)
    for (path, u), v in zip(fnn.tree.flatten(x)[0], fnn.tree.leaves(y)):
        if path[:2] != ("history", "time"):
            assert u.dtype == v.dtype and u.tobytes() == v.tobytes(), fnn.tree.path_str(path)


# --- transformer_digits ---------------------------------------------------------------------------

def test_transformer_digits_runs_on_rows_and_writes_no_files(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    out = run("transformer_digits", *DIGITS, cwd=tmp_path)
    lines = out.splitlines()
    assert lines[0].startswith("BLAS threads: 1 (set by --threads)")
    assert "sequences: 8 tokens of 8 pixels" in out
    assert "TransformerEncoderLayer(4, 128, activation='gelu', norm_first=True)" in out
    assert re.search(r"^epoch 2/2  loss \d\.\d{4}  accuracy .*eval_accuracy", out, re.M), out
    accuracy = re.search(r"^held-out accuracy: (\d+\.\d\d)% \((\d+)/359\)$", out, re.M)
    assert accuracy is not None, out
    assert float(accuracy.group(1)) == pytest.approx(100 * int(accuracy.group(2)) / 359, abs=0.005)
    assert lines[-1].startswith("total time: ")
    assert files_under(tmp_path) == set()


def test_transformer_digits_resumes_bitwise_and_plots(tmp_path: Path) -> None:
    """2 epochs in one go == 1 epoch, stopped, then resumed: the checkpoints hold the same bits."""
    pytest.importorskip("sklearn")
    straight = run("transformer_digits", *DIGITS, "--save", "a", cwd=tmp_path)
    first = run("transformer_digits", *DIGITS, "--save", "b", "--stop-after", "1", cwd=tmp_path)
    assert "stopped after epoch 1 of 2 (--stop-after); continue with --resume b" in first
    assert "held-out accuracy" not in first
    plot = ("--plot", "runs/tf.png") if _has("matplotlib") else ()
    second = run("transformer_digits", *DIGITS, "--resume", "b", *plot, cwd=tmp_path)
    assert "resumed from b/last.fnn after epoch 1" in second
    same_bits(tmp_path / "a" / "last.fnn", tmp_path / "b" / "last.fnn")
    assert (tmp_path / "b" / "best.fnn").exists() and (tmp_path / "b" / "config.fnn").exists()
    assert straight.splitlines()[-2] == second.splitlines()[-2]  # held-out accuracy: x% (k/n)
    if plot:
        assert (tmp_path / "runs" / "tf.png").read_bytes()[:8] == PNG
    other = launch("transformer_digits", *DIGITS, "--lr", "0.01", "--resume", "b", cwd=tmp_path)
    assert other.returncode != 0 and "holds a run made with" in other.stderr


# --- char_gpt -------------------------------------------------------------------------------------

def gpt_figures(out: str) -> tuple[float, float, float]:
    """(held-out nats/char, bits/char, unigram bits/char) from the last report line."""
    m = re.search(r"^held-out loss: (\d+\.\d{4}) nats/char = (\d+\.\d{3}) bits/char over [\d,]+ characters; "
                  r"the unigram entropy of the training text is (\d+\.\d{3}) bits/char$", out, re.M)
    assert m is not None, out
    return float(m.group(1)), float(m.group(2)), float(m.group(3))


def test_char_gpt_trains_on_the_help_texts_and_samples(tmp_path: Path) -> None:
    out = run("char_gpt", *GPT, "--limit", "3000", "--prompt", "The ", cwd=tmp_path)
    lines = out.splitlines()
    assert lines[0].startswith("BLAS threads: 1 (set by --threads)")
    assert re.search(r"^text: Python's help texts \(\d+ topics\), 3,000 characters, a vocabulary of \d+; 2,700 for "
                     r"training, the last 300 held out \(4 windows of 64\)$", out, re.M), out
    assert "tie(serial, target='head/w', source='tok/weight', transpose=True)" in out
    block = "TransformerEncoderLayer(4, 512, dropout=0.0, activation='gelu', norm_first=True, causal=True)"
    assert out.count(block) == 2
    assert re.search(r"^step 2/4  loss \d\.\d{4} \(\d\.\d{3} bits/char\)  eval_loss", out, re.M), out
    assert re.search(r"^step 4/4 ", out, re.M), out
    nats, bpc, unigram = gpt_figures(out)
    assert bpc == pytest.approx(nats / math.log(2), abs=1e-3)
    assert 0 < unigram < math.log2(200)
    sample = lines[lines.index("sample (temperature 0.8):") + 1:]
    assert "\n".join(sample).startswith("The ")
    assert lines[-1].startswith("total time: ")
    assert files_under(tmp_path) == set()


def test_char_gpt_takes_a_text_file_and_resumes_bitwise(tmp_path: Path) -> None:
    """4 steps in one go == 2 steps, stopped, then resumed: the same checkpoint bits, held-out loss and sample."""
    text = tmp_path / "text.txt"
    text.write_text("the cat sat on the mat; the dog sat on the log.\n" * 40, encoding="utf-8")
    flags = (*GPT, "--text", "text.txt", "--limit", "1500", "--prompt", "the ")
    straight = run("char_gpt", *flags, "--save", "a", cwd=tmp_path)
    assert "text: text.txt, 1,500 characters, a vocabulary of" in straight
    first = run("char_gpt", *flags, "--save", "b", "--stop-after", "2", cwd=tmp_path)
    assert "stopped after step 2 of 4 (--stop-after); continue with --resume b" in first
    assert "held-out loss" not in first
    plot = ("--plot", "runs/gpt.png") if _has("matplotlib") else ()
    second = run("char_gpt", *flags, "--resume", "b", *plot, cwd=tmp_path)
    assert "resumed from b after step 2" in second and "step 2/4" not in second
    same_bits(tmp_path / "a" / "last.fnn", tmp_path / "b" / "last.fnn")
    assert (tmp_path / "b" / "best.fnn").exists()
    tail = straight[straight.index("held-out loss"):straight.index("total time")]
    assert tail == second[second.index("held-out loss"):second.index("curves written" if plot else "total time")]
    if plot:
        assert (tmp_path / "runs" / "gpt.png").read_bytes()[:8] == PNG


def test_char_gpt_refuses_a_prompt_outside_the_vocabulary(tmp_path: Path) -> None:
    text = tmp_path / "text.txt"
    text.write_text("abc " * 400, encoding="utf-8")
    proc = launch("char_gpt", "--text", str(text), "--prompt", "xyz", "--steps", "1", "--warmup", "0", cwd=tmp_path)
    assert proc.returncode == 2 and "--prompt" in proc.stderr and "'x'" in proc.stderr


def _has(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True
