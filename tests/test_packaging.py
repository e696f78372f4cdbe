"""Packaging: one version, the MIT license, ``py.typed``, and a wheel that carries them all; a user's
mypy, run against the installed wheel, reads fnn's annotations.

The wheel is built once per session from a copy of the package's files (so nothing is written into
the work tree) with ``pip wheel --no-build-isolation``; .ci/run also builds it with ``python -m build``
and smoke-tests it in a fresh venv."""

import email
import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import fnn

tomllib = pytest.importorskip("tomllib")  # Python 3.11+; CI runs 3.11

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md", "LICENSE", "MANIFEST.in"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "fnn", src / "fnn", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--wheel-dir", str(out), str(src)], check=True, capture_output=True)
    (built,) = out.glob("fnn-*.whl")
    return built


def test_the_version_is_defined_once_in_fnn():
    assert "version" not in PYPROJECT["project"], "pyproject.toml must not repeat the version"
    assert "version" in PYPROJECT["project"]["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "fnn.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+((a|b|rc)\d+)?(\.post\d+)?(\.dev\d+)?", fnn.__version__)


def test_the_installed_metadata_has_fnns_version():
    assert importlib.metadata.version("fnn") == fnn.__version__, (
        "the installed metadata is stale: reinstall with pip install -e '.[dev,examples,mpi]'")


def test_the_license_is_mit():
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License\n")
    assert "Copyright (c) 2026 The fnn developers" in text
    assert 'THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND' in text
    assert PYPROJECT["project"]["license"] == "MIT"
    assert PYPROJECT["project"]["license-files"] == ["LICENSE"]
    assert not [c for c in PYPROJECT["project"]["classifiers"] if c.startswith("License ::")]


def test_the_python_classifiers_agree_with_requires_python():
    lowest = re.fullmatch(r">=3\.(\d+)", PYPROJECT["project"]["requires-python"])
    assert lowest, PYPROJECT["project"]["requires-python"]
    minors = sorted(int(c.rsplit(".", 1)[1]) for c in PYPROJECT["project"]["classifiers"]
                    if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c))
    assert minors and minors[0] == int(lowest.group(1))
    assert sys.version_info[1] in minors, "the Python running the tests is not among the classifiers"


def test_py_typed_marks_the_package():
    assert (ROOT / "fnn" / "py.typed").is_file()


def test_the_wheel_holds_every_module_py_typed_and_the_license(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        (metadata_name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = email.message_from_bytes(z.read(metadata_name))
        (license_name,) = [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
        license_text = z.read(license_name).decode()
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "fnn").rglob("*.py") if "__pycache__" not in p.parts}
    assert modules <= names, f"modules missing from the wheel: {sorted(modules - names)}"
    assert "fnn/py.typed" in names
    assert not [n for n in names if not n.startswith(("fnn/", f"fnn-{fnn.__version__}.dist-info/"))]
    assert metadata["Name"] == "fnn" and metadata["Version"] == fnn.__version__
    assert metadata["License-Expression"] == "MIT" and metadata["License-File"] == "LICENSE"
    assert license_text == (ROOT / "LICENSE").read_text()
    assert metadata.get_all("Requires-Dist")[0].startswith("numpy")
    assert not [r for r in metadata.get_all("Requires-Dist") if "extra ==" not in r and not r.startswith("numpy")]


USER_SCRIPT = """\
import numpy as np

import fnn
from fnn.layers import Dense, ReLU

net = fnn.serial(Dense(8), ReLU(), Dense(3))
params = net.init(fnn.random.key(0), (4,))
y, vjp = net.apply(params, np.zeros((2, 4), np.float32))
"""


def test_a_users_mypy_reads_the_installed_wheels_annotations(wheel, tmp_path):
    # mypy does not follow the editable install's import hook, and run in the repository it would
    # read ./fnn as source: install the wheel into a venv of its own, beside numpy, and run mypy
    # from an empty folder with that venv's python, as a user's project would.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                    "--target", site, str(wheel)], check=True, capture_output=True)
    numpy_dir = Path(importlib.util.find_spec("numpy").origin).parent.parent
    (Path(site) / "numpy_for_mypy.pth").write_text(f"{numpy_dir}\n")
    user = tmp_path / "user"
    user.mkdir()
    (user / "good.py").write_text(USER_SCRIPT)
    (user / "bad.py").write_text(USER_SCRIPT + 'wrong = Dense("8")\n')

    def mypy(script: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k not in ("MYPYPATH", "PYTHONPATH")}
        return subprocess.run(
            [sys.executable, "-m", "mypy", "--strict", "--python-executable", str(python),
             "--cache-dir", str(tmp_path / "mypy_cache"), script],
            cwd=user, env=env, capture_output=True, text=True)

    good = mypy("good.py")
    assert good.returncode == 0, good.stdout + good.stderr
    bad = mypy("bad.py")
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert 'bad.py:9: error: Argument 1 to "Dense" has incompatible type "str"; expected "int"' in bad.stdout
    assert "Found 1 error in 1 file" in bad.stdout, bad.stdout


def test_changelog_has_this_version_and_an_unreleased_section() -> None:
    """The first section is "Unreleased"; the next is this version with a date, with a migration
    note and the Added, Changed and Fixed groups in that order."""
    text = (ROOT / "CHANGELOG.md").read_text()
    sections = re.findall(r"^## (.+)$", text, flags=re.M)
    assert sections[:2] == ["Unreleased", f"{fnn.__version__} — {sections[1].split(' — ')[-1]}"]
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", sections[1].split(" — ")[-1])
    release = text.split(f"## {sections[1]}\n", 1)[1].split("\n## ", 1)[0]
    groups = re.findall(r"^### (.+)$", release, flags=re.M)
    assert groups == ["Migrating from 0.1", "Added", "Changed", "Fixed"]
