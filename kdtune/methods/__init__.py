"""METHODS: knowledge-distillation families, each a registered factory of a ``Distiller``.

Importing this package registers every family.
"""

from kdtune.methods import _logit  # noqa: F401 - registers hinton, ce
from kdtune.methods._base import METHODS, Distiller, MethodContext, build_method

__all__ = ["METHODS", "Distiller", "MethodContext", "build_method"]
