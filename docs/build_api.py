"""Build fnn's API reference from its docstrings with pdoc: one HTML page per public module.

    pip install -e ".[dev]"          # brings pdoc
    python docs/build_api.py         # writes build/api/ (git-ignored); open build/api/index.html
    python docs/build_api.py -o DIR  # elsewhere

The public modules are found by walking the ``fnn`` package: every module whose dotted name has
no part starting with ``_`` gets a page, so a new module is documented without editing a list.
Docstrings are reStructuredText (``:func:`serial```, ``x: (N, F)``).

The build fails (exit status 1, each problem on its own line) on

- any warning pdoc raises: a module that does not import, a name in ``__all__`` that does not
  exist, a type annotation it cannot resolve;
- a cross-reference role (``:mod:``, ``:func:``, ``:class:``, ``:meth:``, ``:attr:``, ``:data:``,
  ``:const:``, ``:exc:``, ``:obj:``) whose target is no public, documented object, so that
  pdoc would print it as plain text instead of a link. A target resolves as pdoc's linker does:
  a name in the docstring's own module (or class), a module, or ``module.qualname`` of a
  documented module.

Missing docstrings of public names are caught by ``tests/test_api_docs.py``.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import re
import shutil
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pdoc
import pdoc.doc
import pdoc.render

ROOT = Path(__file__).resolve().parent.parent
ROLE = re.compile(r"(?::py)?:(?:mod|func|data|const|class|meth|attr|exc|obj):`([^`]+)`")


def public_modules(package: str = "fnn") -> list[str]:
    """Dotted names of ``package`` and every submodule with no ``_``-prefixed part, sorted."""
    pkg = importlib.import_module(package)
    names = [package]
    for info in pkgutil.walk_packages(pkg.__path__, package + "."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            names.append(info.name)
    return sorted(names)


def _fix_namedtuple_signatures(modules: list[str]) -> None:
    """Point each ``typing.NamedTuple``'s generated ``__new__`` at its class's module.

    ``collections.namedtuple`` builds ``__new__`` in a module called ``namedtuple_<Name>``, so pdoc
    cannot evaluate string annotations (``from __future__ import annotations``) in the constructor's
    signature and warns (pdoc issue 765). This only changes the objects in this build process.
    """
    for name in modules:
        module = importlib.import_module(name)
        for value in vars(module).values():
            new = getattr(value, "__new__", None)
            if (
                isinstance(value, type)
                and issubclass(value, tuple)
                and value.__module__ == name
                and getattr(new, "__module__", "").startswith("namedtuple_")
            ):
                new.__module__ = name


def _docs(doc: pdoc.doc.Doc, documented: set[str]) -> Iterator[tuple[pdoc.doc.Doc, str]]:
    """``doc`` and every member pdoc shows under it, each with the class namespace it sits in.
    A member re-exported from another documented module is left to that module."""
    yield doc, doc.qualname if isinstance(doc, pdoc.doc.Class) else ""
    if isinstance(doc, pdoc.doc.Namespace):
        for member in doc.members.values():
            if isinstance(doc, pdoc.doc.Module) and member.taken_from[0] != doc.modulename \
                    and member.taken_from[0] in documented:
                continue
            if isinstance(member, pdoc.doc.Class):
                yield from _docs(member, documented)
            else:
                yield member, doc.qualname if isinstance(doc, pdoc.doc.Class) else ""


def _public(doc: pdoc.doc.Doc | None) -> bool:
    return doc is not None and not any(p.startswith("_") and not p.endswith("__") for p in doc.qualname.split("."))


def resolves(target: str, module: pdoc.doc.Module, namespace: str, all_modules: dict[str, pdoc.doc.Module]) -> bool:
    """Whether pdoc links the role target ``target`` written in ``module`` (inside class ``namespace``)."""
    if "<" in target and target.endswith(">"):  # :func:`text <target>`
        target = target[target.rindex("<") + 1 : -1]
    name = target.strip().lstrip("~").removesuffix("()")
    if namespace and _public(module.get(f"{namespace}.{name}")):
        return True
    if _public(module.get(name)) or name in all_modules:
        return True
    parts = name.split(".")
    for i in range(len(parts) - 1, 0, -1):
        owner = all_modules.get(".".join(parts[:i]))
        if owner is not None and _public(owner.get(".".join(parts[i:]))):
            return True
    return False


def broken_references(all_modules: dict[str, pdoc.doc.Module]) -> list[str]:
    """One line per cross-reference role that pdoc would not turn into a link."""
    problems = []
    for module in all_modules.values():
        for doc, namespace in _docs(module, set(all_modules)):
            for target in ROLE.findall(doc.docstring):
                if not resolves(target, module, namespace, all_modules):
                    problems.append(f"{doc.fullname}: broken cross-reference {target!r}")
    return problems


def build(output: Path) -> list[str]:
    """Write the reference into ``output``; return the problems found (empty: a clean build)."""
    modules = public_modules()
    import fnn

    _fix_namedtuple_signatures(modules)
    pdoc.render.configure(
        docformat="restructuredtext",
        footer_text=f"fnn {fnn.__version__}",
        show_source=True,
        search=True,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        all_modules = {name: pdoc.doc.Module.from_name(name) for name in modules}
        # pdoc.pdoc(*modules) would walk each name again (and warn of the repeats): render the list as is.
        for name, module in all_modules.items():
            page = output / f"{name.replace('.', '/')}.html"
            page.parent.mkdir(parents=True, exist_ok=True)
            page.write_text(pdoc.render.html_module(module, all_modules), encoding="utf-8")
        (output / "index.html").write_text(pdoc.render.html_index(all_modules), encoding="utf-8")
        (output / "search.js").write_text(pdoc.render.search_index(all_modules), encoding="utf-8")
        problems = broken_references(all_modules)
    return [f"pdoc warning: {w.message}" for w in caught] + problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "build" / "api", help="default: build/api")
    args = parser.parse_args(argv)
    out: Path = args.output
    if out.exists() and any(out.iterdir()) and not (out / "index.html").exists():
        parser.error(f"{out} is not empty and holds no earlier API reference; refusing to overwrite it")
    shutil.rmtree(out, ignore_errors=True)
    problems = build(out)
    for line in problems:
        print(line, file=sys.stderr)
    pages = sorted(out.rglob("*.html"))
    print(f"API reference: {len(pages)} pages in {out}" + (f"; {len(problems)} problems" if problems else ""))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
