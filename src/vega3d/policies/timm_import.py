"""Import timm on a machine without torchvision.

timm imports torchvision at package import (``timm.data`` transforms and datasets, ``FrozenBatchNorm2d``)
although its ViTs never call it; this project's CPU torch has no matching torchvision build. When
torchvision is absent, :func:`import_timm` serves placeholder ``torchvision.*`` modules for the duration of
``import timm`` only (any use of a placeholder raises ImportError) and removes them afterwards, so other
libraries (transformers' ``is_torchvision_available``) still see no torchvision. With torchvision installed,
timm is imported normally.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types


class _Missing(type):
    """A placeholder torchvision class: attribute access gives more placeholders, calling one raises."""

    def __getattr__(cls, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Missing(name, (), {})

    def __call__(cls, *args, **kwargs):
        raise ImportError(f"torchvision.{cls.__name__} needs torchvision, which is not installed")


class _Placeholder(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Missing(name, (), {})


class _PlaceholderFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path=None, target=None):
        if name == "torchvision" or name.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        return _Placeholder(spec.name)

    def exec_module(self, module):
        module.__path__ = []


def import_timm():
    if "timm" in sys.modules or importlib.util.find_spec("torchvision") is not None:
        import timm

        return timm
    finder = _PlaceholderFinder()
    sys.meta_path.insert(0, finder)
    try:
        import timm
    finally:
        sys.meta_path.remove(finder)
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]
    return timm
