"""after_import patches a module when it is imported, or at once if it already is."""

from __future__ import annotations

import sys

import pytest

from verl_epo.embedded import import_hooks


@pytest.fixture
def module_dir(tmp_path, monkeypatch):
    package = tmp_path / "hooked_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "target.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield package
    for name in ("hooked_pkg", "hooked_pkg.target"):
        sys.modules.pop(name, None)
    import_hooks._patches.pop("hooked_pkg.target", None)


def bump(module):
    module.VALUE += 10


def test_patch_runs_when_the_module_is_first_imported(module_dir):
    import_hooks.after_import("hooked_pkg.target", bump)
    import_hooks.after_import("hooked_pkg.target", bump)  # registered once
    assert "hooked_pkg.target" not in sys.modules
    import hooked_pkg.target

    assert hooked_pkg.target.VALUE == 11
    assert sum(isinstance(f, import_hooks.PatchFinder) for f in sys.meta_path) == 1


def test_patch_runs_at_once_on_an_imported_module(module_dir):
    import hooked_pkg.target

    import_hooks.after_import("hooked_pkg.target", bump)
    assert hooked_pkg.target.VALUE == 11


def test_other_modules_import_untouched(module_dir):
    import_hooks.after_import("hooked_pkg.target", bump)
    (module_dir / "other.py").write_text("VALUE = 1\n")
    import hooked_pkg.other

    assert hooked_pkg.other.VALUE == 1
