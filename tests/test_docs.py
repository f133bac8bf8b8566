"""The documentation sources keep up with the code (no Sphinx needed).

* Every public object of every public module (walked through ``__all__``, so a new function or
  submodule is seen without editing this test) is listed in an ``autosummary`` of
  ``docs/api.md``; classes use the template that documents their members.
* Every test named on the bad-input page exists.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
CLASS_TEMPLATE = "autosummary/class.rst"


def public_modules(name: str = "chipvi") -> list[str]:
    """``name`` and every module reachable through ``__all__`` below it."""
    module = importlib.import_module(name)
    found = [name]
    for attr in getattr(module, "__all__", ()):
        value = getattr(module, attr)
        if isinstance(value, types.ModuleType) and value.__name__.startswith(name + "."):
            found += public_modules(value.__name__)
    return found


#: Documented besides the public modules: the model's maths, for those who extend it.
INTERNALS = ("chipvi.module",)


def public_objects() -> dict[str, object]:
    """``"module.name" -> object`` for every public name of every public module."""
    out = {}
    for modname in [*public_modules(), *INTERNALS]:
        module = importlib.import_module(modname)
        for attr in module.__all__:
            value = getattr(module, attr)
            if attr.startswith("_") or isinstance(value, types.ModuleType):
                continue
            out[f"{modname}.{attr}"] = value
    return out


def autosummary_entries(text: str) -> dict[str, str]:
    """``qualified name -> template`` of every autosummary entry of a MyST/RST source."""
    entries: dict[str, str] = {}
    current = ""
    block = None  # template of the autosummary block being read, or None outside one
    for line in text.splitlines():
        stripped = line.strip()
        if m := re.match(r"\.\.\s+(?:current)?module::\s*(\S+)", stripped):
            current, block = m.group(1), None
        elif re.match(r"\.\.\s+autosummary::", stripped):
            block = ""
        elif block is not None:
            if not stripped:
                continue
            if not line.startswith((" ", "\t")) or stripped.startswith("```"):
                block = None
            elif m := re.match(r":template:\s*(\S+)", stripped):
                block = m.group(1)
            elif not stripped.startswith(":"):
                name = stripped.lstrip("~").split()[0]
                qualified = name if name.startswith("chipvi.") else f"{current}.{name}"
                entries[qualified] = block
    return entries


def resolve(qualified: str) -> object:
    parts = qualified.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for part in parts[i:]:
            obj = getattr(obj, part)
        return obj
    raise ImportError(qualified)


@pytest.fixture(scope="module")
def api_entries() -> dict[str, str]:
    return autosummary_entries((DOCS / "api.md").read_text())


def test_walk_finds_the_public_modules():
    assert set(public_modules()) >= {
        "chipvi", "chipvi.io", "chipvi.io.encode", "chipvi.pp", "chipvi.tl", "chipvi.pl",
        "chipvi.datasets",
    }  # fmt: skip
    assert {"chipvi.ChIPVI", "chipvi.settings", "chipvi.read_bams", "chipvi.tl.profile"} <= set(
        public_objects()
    )


def test_parser_reads_entries_with_their_module_and_template():
    text = (
        ".. currentmodule:: chipvi\n\n.. autosummary::\n   :toctree: generated\n"
        "   :template: autosummary/class.rst\n\n   ChIPVI\n   ~pp.filter_region\n\n"
        "Text\n\n.. autosummary::\n\n   tl.frip\n"
    )
    assert autosummary_entries(text) == {
        "chipvi.ChIPVI": CLASS_TEMPLATE,
        "chipvi.pp.filter_region": CLASS_TEMPLATE,
        "chipvi.tl.frip": "",
    }


def test_every_public_object_is_in_the_api_reference(api_entries):
    documented = {id(resolve(name)) for name in api_entries}
    missing = [
        name
        for name, obj in public_objects().items()
        if name not in api_entries and id(obj) not in documented
    ]
    assert not missing, f"add to docs/api.md: {missing}"


def test_api_entries_exist(api_entries):
    for name in api_entries:
        resolve(name)  # raises for a renamed or removed object


def test_classes_use_the_member_listing_template(api_entries):
    """The template lists and documents every member the class defines; members inherited from
    chipvi's own base classes would only be named, so there must be none."""
    for name, template in api_entries.items():
        obj = resolve(name)
        if not inspect.isclass(obj):
            continue
        assert template == CLASS_TEMPLATE, f"{name}: use :template: {CLASS_TEMPLATE}"
        for attr in dir(obj):
            if attr.startswith("_"):
                continue
            owner = next((k for k in obj.__mro__ if attr in vars(k)), obj)
            if owner is not obj and owner.__module__.startswith("chipvi"):
                pytest.fail(f"{name}.{attr} is inherited from {owner.__qualname__}")


def test_chipvi_model_methods_are_its_own():
    from chipvi import ChIPVI

    for method in ("setup_anndata", "train", "add_posterior", "get_denoised", "save", "load"):
        assert method in vars(ChIPVI), method


def test_bad_input_page_names_real_tests():
    page = (DOCS / "bad_input.md").read_text()
    named = re.findall(r"`tests/(test_\w+\.py)::(test_\w+)`", page)
    assert len(named) >= 60
    functions: dict[str, set[str]] = {}
    for file, test in named:
        if file not in functions:
            tree = ast.parse((ROOT / "tests" / file).read_text())
            functions[file] = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        assert test in functions[file], f"docs/bad_input.md names {file}::{test}, which is gone"
