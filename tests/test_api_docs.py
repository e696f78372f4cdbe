"""The API reference is complete: every public module has ``__all__`` and a docstring, every name in
``__all__`` has a docstring, and every cross-reference in a docstring resolves (``docs/build_api.py``).

Public modules are found by walking the package (no part of the name starts with ``_``), so a new
module is checked without being listed anywhere."""

import ast
import dataclasses
import importlib
import importlib.util
import inspect
import sys
import textwrap
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load_build_api() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_api", ROOT / "docs" / "build_api.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build_api = _load_build_api()
MODULES = build_api.public_modules()
build_api._fix_namedtuple_signatures(MODULES)  # as the build does, so pdoc does not warn here either


def _variable_docstring(module: ModuleType, name: str) -> str | None:
    """The string literal right after ``name = ...`` at the top level of ``module`` (pdoc's convention)."""
    try:
        source = inspect.getsource(module)
    except (OSError, TypeError):
        return None
    body = ast.parse(source).body
    for stmt, after in zip(body, body[1:]):
        if isinstance(stmt, ast.Assign):
            targets = stmt.targets
        elif isinstance(stmt, ast.AnnAssign):
            targets = [stmt.target]
        else:
            continue
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            value = after.value if isinstance(after, ast.Expr) else None
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                return value.value
    return None


def _class_docstring(cls: type) -> str | None:
    """``cls``'s own docstring, not the one namedtuple or dataclass write when it has none."""
    doc = cls.__dict__.get("__doc__")
    if not doc:
        return None
    if issubclass(cls, tuple) and hasattr(cls, "_fields") and doc == f"{cls.__name__}({', '.join(cls._fields)})":
        return None
    if dataclasses.is_dataclass(cls) and doc == cls.__name__ + str(inspect.signature(cls)).replace(" -> None", ""):
        return None
    return doc


def docstring(module: ModuleType, name: str) -> str | None:
    """The docstring pdoc shows for ``module.name``; for a value (a constant, a type alias), the
    string after its assignment in whichever fnn module assigns it (it may be re-exported)."""
    obj: Any = getattr(module, name)
    if inspect.ismodule(obj):
        return obj.__doc__
    if (inspect.isroutine(obj) or inspect.isclass(obj)) and getattr(obj, "__module__", "").startswith("fnn"):
        return _class_docstring(obj) if inspect.isclass(obj) else obj.__doc__
    # A value, or an alias of something not defined in fnn (``Tree = Any``): its own docstring.
    for other in [module] + [sys.modules[m] for m in MODULES]:
        if getattr(other, name, None) is obj and (doc := _variable_docstring(other, name)):
            return doc
    return None


@pytest.mark.parametrize("name", MODULES)
def test_every_public_name_has_a_docstring(name):
    module = importlib.import_module(name)
    assert (module.__doc__ or "").strip(), f"{name} has no module docstring"
    assert hasattr(module, "__all__"), f"{name} has no __all__: list its public names (the API reference uses it)"
    missing = [n for n in module.__all__ if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names what the module does not define: {missing}"
    undocumented = [n for n in module.__all__ if not (docstring(module, n) or "").strip()]
    assert not undocumented, f"{name}: public names without a docstring: {undocumented}"


def test_the_walk_finds_subpackages_and_skips_private_modules():
    assert {"fnn", "fnn.core", "fnn.layers", "fnn.layers.dense", "fnn.optim"} <= set(MODULES)
    assert not [m for m in MODULES if "._" in m]


def test_every_cross_reference_resolves():
    import pdoc.doc

    all_modules = {name: pdoc.doc.Module.from_name(name) for name in MODULES}
    problems = build_api.broken_references(all_modules)
    assert not problems, "cross-references pdoc cannot link (write the full dotted name):\n" + "\n".join(problems)


def test_a_broken_cross_reference_is_reported(tmp_path, monkeypatch):
    import pdoc.doc

    (tmp_path / "refpkg").mkdir()
    (tmp_path / "refpkg" / "__init__.py").write_text(textwrap.dedent('''
        """See :func:`here`, :class:`Thing`, :meth:`Thing.go`, :mod:`refpkg` and :func:`nowhere`."""

        __all__ = ["here", "Thing"]


        def here():
            """Uses :func:`~refpkg.here` and :data:`refpkg.MISSING`."""


        def _private():
            """Private."""


        class Thing:
            """Calls :meth:`go` and :func:`_private`."""

            def go(self):
                """Go."""
        '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    all_modules = {"refpkg": pdoc.doc.Module.from_name("refpkg")}
    assert build_api.broken_references(all_modules) == [
        "refpkg: broken cross-reference 'nowhere'",
        "refpkg.here: broken cross-reference 'refpkg.MISSING'",
        "refpkg.Thing: broken cross-reference '_private'",
    ]
