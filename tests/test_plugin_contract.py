"""The plugin contract is the package ``core``: plugins import nothing else of Rapportal's, and all of it is documented."""

from __future__ import annotations

import ast
import inspect
import io
import re
import tomllib
import types
from datetime import UTC, datetime
from pathlib import Path

import pytest

import core
from core import Engine, ExportContext, ExportRow, ExportSelection, build_engine

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PLUGIN_MODULES = sorted((ROOT / "plugins").rglob("*.py"))
CORE_SUBMODULES = sorted(path for path in (ROOT / "core").rglob("*.py") if path != ROOT / "core" / "__init__.py")


def _relative(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _is_core_attribute(node: ast.AST) -> bool:
    return isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "core"


def _imports_the_package(node: ast.ImportFrom) -> bool:
    """``from core import x`` or ``from . import x``: both run and read ``core/__init__.py``."""
    return (node.level == 0 and node.module == "core") or (node.level > 0 and node.module is None)


def contract_breaches(source: str) -> list[str]:
    """Imports in a plugin's source that go around ``core``: core submodules, ``web``, or a name core does not export."""
    exported = set(core.__all__)
    breaches = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            breaches += [
                f"line {node.lineno}: import {alias.name}"
                for alias in node.names
                if alias.name.startswith("core.") or alias.name.split(".")[0] == "web"
            ]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            module = node.module or ""
            if module.startswith("core.") or module.split(".")[0] == "web":
                breaches.append(f"line {node.lineno}: from {module} import ...")
            elif module == "core":
                breaches += [
                    f"line {node.lineno}: from core import {alias.name} (not in core.__all__)"
                    for alias in node.names
                    if alias.name not in exported
                ]
        elif _is_core_attribute(node) and node.attr not in exported:
            breaches.append(f"line {node.lineno}: core.{node.attr} (not in core.__all__)")
    return breaches


def package_imports(source: str) -> list[str]:
    """Imports of the package ``core`` itself (its ``__init__``) in a core submodule's source."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [f"line {node.lineno}: import core" for alias in node.names if alias.name == "core"]
        elif isinstance(node, ast.ImportFrom) and _imports_the_package(node):
            found.append(f"line {node.lineno}: from {'.' * node.level}{node.module or ''} import ...")
    return found


def test_there_are_plugin_modules_and_core_submodules_to_check():
    names = {_relative(path) for path in PLUGIN_MODULES}
    assert {"plugins/export_csv.py", "plugins/widgets/__init__.py", "plugins/builtin_instruments.py"} <= names
    assert "core/plugins.py" in {_relative(path) for path in CORE_SUBMODULES}


@pytest.mark.parametrize("path", PLUGIN_MODULES, ids=_relative)
def test_builtin_plugins_import_only_what_core_exports(path: Path):
    assert contract_breaches(path.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize(
    "source",
    [
        "from core.export import neutralise_cell",
        "import core.scoring",
        "import core.scoring as scoring",
        "from web.state import portal",
        "import web",
        "from core import export",
        "import core\nvalue = core.export.as_utc",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from core.instruments import Item",
    ],
)
def test_the_plugin_check_catches_every_way_around_core(source: str):
    assert len(contract_breaches(source)) == 1


def test_the_plugin_check_allows_core_names_and_the_plugins_own_modules():
    source = (
        "import core\nfrom core import Item, hookimpl\nfrom . import helpers\nfrom .helpers import x\nm = core.hookimpl"
    )
    assert contract_breaches(source) == []


@pytest.mark.parametrize("path", CORE_SUBMODULES, ids=_relative)
def test_no_core_submodule_imports_the_core_package(path: Path):
    """``core/__init__.py`` imports every submodule, so a submodule importing it back would be a cycle."""
    assert package_imports(path.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize("source", ["from core import __version__", "import core", "from . import hookspecs"])
def test_the_cycle_check_catches_imports_of_the_package(source: str):
    assert len(package_imports(source)) == 1


def test_the_cycle_check_allows_submodule_imports():
    assert package_imports("import core.hookspecs as hookspecs\nfrom core.version import __version__") == []


def _own_docstring(obj: object) -> str:
    """A class's or function's own docstring; a dataclass without one gets its signature, which is not one."""
    doc = (vars(obj).get("__doc__") if inspect.isclass(obj) else obj.__doc__) or ""
    return "" if doc.startswith(f"{getattr(obj, '__name__', '')}(") else doc.strip()


def _doc_comment(name: str) -> str:
    """The ``#:`` comment right above the top-level assignment of ``name`` in a core module ("" when none)."""
    for path in CORE_SUBMODULES:
        lines = path.read_text(encoding="utf-8").splitlines()
        for index, line in enumerate(lines):
            if re.match(rf"{name}\b[^=]*=", line):
                return lines[index - 1].removeprefix("#:").strip() if lines[index - 1].startswith("#:") else ""
    return ""


@pytest.mark.parametrize("name", core.__all__)
def test_every_exported_name_is_importable_and_documented(name: str):
    namespace: dict[str, object] = {}
    exec(f"from core import {name}", namespace)
    obj = namespace[name]
    if inspect.isclass(obj) or inspect.isroutine(obj):
        assert _own_docstring(obj), f"give core.{name} a docstring"
    else:
        assert _doc_comment(name), f"document core.{name} with a '#:' comment above its assignment"


def test_exported_names_are_unique_and_star_import_gives_them_all():
    namespace: dict[str, object] = {}
    exec("from core import *", namespace)
    assert len(core.__all__) == len(set(core.__all__))
    assert set(core.__all__) <= set(namespace)


def _readme_table_names() -> list[str]:
    section = README.read_text(encoding="utf-8").split("## Writing a plugin", 1)[1].split("\n## ", 1)[0]
    table = section.split("| group | names | what for |", 1)[1].split("\n\n", 1)[0]
    rows = [line.split("|")[2] for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    return [name for row in rows for name in re.findall(r"`(\w+)`", row)]


def test_the_readme_plugin_table_lists_exactly_what_core_exports():
    listed = _readme_table_names()
    assert len(listed) == len(set(listed)), "a name is listed twice in the README's plugin table"
    unlisted = sorted(set(core.__all__) - set(listed))
    assert unlisted == [], f"add {unlisted} to the table in the README's 'Writing a plugin' section"
    stale = sorted(set(listed) - set(core.__all__))
    assert stale == [], f"the README's plugin table lists {stale}, which core does not export"


def test_the_package_version_is_the_distributions():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert core.__version__ == pyproject["project"]["version"]


def test_the_exporter_example_in_docs_runs(engine: Engine, tmp_path: Path):
    """docs/exports.md's plugin is real code: it registers, and writes a neutralised row in column order."""
    docs = (ROOT / "docs" / "exports.md").read_text(encoding="utf-8")
    source = re.search(r"```python\n(# acme_exports/__init__.py\n.*?)```", docs, re.S).group(1)
    assert contract_breaches(source) == []
    module = types.ModuleType("acme_exports")
    module.__file__ = str(tmp_path / "__init__.py")
    exec(compile(source, "docs/exports.md", "exec"), module.__dict__)
    exporter = build_engine(load_entrypoints=False, extra_plugins=[module]).exporters["acme-tsv"]
    assert exporter.can_export(ExportSelection(identifying=True)) is False

    selection = ExportSelection(instruments=("gad7",))
    context = ExportContext(engine, selection, (engine.instruments.get("gad7"),))
    submitted = datetime(2024, 5, 1, 9, 30, tzinfo=UTC)
    row = ExportRow(
        1, "=cmd|' /C calc'!A0", "dr-a", "3", "gad7", context.instruments[0].version, submitted, {}, {}, None, ()
    )
    stream = io.BytesIO()
    exporter.write([row], stream, context)
    header, line = stream.getvalue().decode().splitlines()
    assert header.split("\t") == [column.name for column in context.columns]
    values = dict(zip(header.split("\t"), line.split("\t"), strict=True))
    assert values["client"] == "'=cmd|' /C calc'!A0"
    assert values["session"] == "3" and values["instrument"] == "gad7"
