"""The plugin contract is documented: every hook appears in the README with its exact signature."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from core import hookspecs

README = Path(__file__).resolve().parent.parent / "README.md"


def hook_functions():
    return [
        (name, fn) for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if hasattr(fn, "rapportal_spec")
    ]


def signature_line(name, fn) -> str:
    source = inspect.getsource(fn)
    header = re.search(r"def .*?\) -> [^:]+:", source, re.S).group(0)
    return " ".join(header.split())


def test_there_are_hooks_to_document():
    names = {name for name, _ in hook_functions()}
    assert {"register_instruments", "register_scoring_rules", "register_exporters", "register_alert_rules"} <= names
    assert "response_submitted" in names


def test_every_hook_is_in_the_readme_with_its_exact_signature():
    readme = " ".join(README.read_text(encoding="utf-8").split())
    missing = [signature_line(n, f) for n, f in hook_functions() if signature_line(n, f) not in readme]
    assert missing == [], f"document these hooks in README.md: {missing}"


def test_every_hook_has_a_docstring_with_params_and_version():
    for name, fn in hook_functions():
        doc = inspect.getdoc(fn) or ""
        assert doc, name
        assert ".. versionadded::" in doc, name
        for param in inspect.signature(fn).parameters:
            assert f":param {param}:" in doc, f"{name} does not document {param}"


def test_the_readme_plugin_example_runs(tmp_path):
    """The "Writing a plugin" example is real code: load it as a module and use its rule."""
    import types

    from core import build_engine

    readme = README.read_text(encoding="utf-8")
    source = re.search(r"```python\n(# acme_measures/__init__.py\n.*?)```", readme, re.S).group(1)
    module = types.ModuleType("acme_measures")
    module.__file__ = str(tmp_path / "__init__.py")
    exec(compile(source, "README.md", "exec"), module.__dict__)
    module.register_instruments = lambda: []  # the example's acme.json is not shipped here
    engine = build_engine(load_entrypoints=False, extra_plugins=[module])
    rule = engine.scoring_rules["count_at_least"]

    class Ctx:
        answers = {"a": 3, "b": 1, "c": None}

    assert rule.compute({"items": ["a", "b", "c"], "value": 2}, Ctx()) == 1
