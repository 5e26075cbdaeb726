"""METHODS: knowledge-distillation families, each a registered factory of a ``Distiller``.

Importing this package registers every family.
"""

from kdtune.methods import (
    _datafree,  # noqa: F401 - registers noise, adversarial_noise, lopes_*
    _feature,  # noqa: F401 - registers cosine, fitnets
    _logit,  # noqa: F401 - registers hinton, ce
    _robust,  # noqa: F401 - registers ard, rslad, iad, adaad, trades
    _teacher_free,  # noqa: F401 - registers tfkd_reg, tfkd_self, reversed
)
from kdtune.methods._base import (
    METHODS,
    Distiller,
    MethodContext,
    SoftTargetKD,
    build_method,
    method_owns_attack,
    own_attack_problem,
    owns_attack,
)

__all__ = [
    "METHODS", "Distiller", "MethodContext", "SoftTargetKD", "build_method", "method_owns_attack",
    "own_attack_problem", "owns_attack",
]
