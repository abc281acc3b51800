"""Patch a module right after it is imported, in whatever process imports it.

CPU mode adjusts a few verl and vLLM modules that most processes never import (vLLM's GEMM
dispatch, verl's vLLM rollout): importing them at activation would load vLLM into every process
that imports verl. :func:`after_import` instead runs the patch when the module is first imported,
or at once if it is imported already. Patches must be idempotent.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

Patch = Callable[[ModuleType], None]

_patches: dict[str, list[Patch]] = {}


class _PatchedLoader(importlib.abc.Loader):
    """The module's own loader, then its patches."""

    def __init__(self, loader: importlib.abc.Loader, patches: list[Patch]) -> None:
        self._loader = loader
        self._patches = patches

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        for patch in self._patches:
            patch(module)


class PatchFinder(importlib.abc.MetaPathFinder):
    """Finds a patched module with the other finders and wraps its loader."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        patches = _patches.get(fullname)
        if not patches:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return None
        spec.loader = _PatchedLoader(spec.loader, patches)
        return spec


def after_import(module_name: str, patch: Patch) -> None:
    """Run ``patch(module)`` once ``module_name`` is imported (now, if it already is)."""
    module = sys.modules.get(module_name)
    if module is not None:
        patch(module)
        return
    if patch not in _patches.setdefault(module_name, []):
        _patches[module_name].append(patch)
    if not any(isinstance(finder, PatchFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, PatchFinder())
