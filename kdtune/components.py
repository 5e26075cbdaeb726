"""The built-in extension points. Importing this module imports each one, so that its registry enrolls
itself (``kdtune.registry.registry_of``) and its entries are registered."""

from kdtune import attacks, data, losses, methods, models, penalties

BUILT_IN = (data.DATASETS, models.MODELS, methods.METHODS, losses.LOSSES, penalties.PENALTIES, attacks.ATTACKS)
