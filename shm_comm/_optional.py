"""Optional dependencies: one message that says which extra is missing and how to install it.

The README installs from the checkout (``pip install -e ".[all]"``), so the hint names the
checkout command for the extra first, then the plain package names, which work everywhere.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["install_hint", "missing", "require"]


def install_hint(extra: str, packages: str) -> str:
    """``pip install -e ".[extra]"`` in the checkout, or ``pip install packages``."""
    return (f"in the shm_comm checkout run pip install -e \".[{extra}]\" "
            f"(or pip install {packages})")


def missing(feature: str, extra: str, packages: str, exc: ImportError) -> ModuleNotFoundError:
    """The error to raise (``from exc``) when ``feature`` lacks the optional ``extra``."""
    return ModuleNotFoundError(
        f"{feature} needs the '{extra}' extra ({packages}), which is not installed: "
        f"{install_hint(extra, packages)}", name=exc.name)


def require(module: str, feature: str, extra: str, packages: str) -> ModuleType:
    """Import ``module``, or raise :func:`missing`'s error for ``feature``."""
    try:
        importlib.import_module(module.partition(".")[0])  # (a cached submodule would hide it)
        return importlib.import_module(module)
    except ImportError as exc:
        raise missing(feature, extra, packages, exc) from exc
