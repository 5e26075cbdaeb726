"""The built-in extension points. Importing this module imports each one, so that its registry enrolls
itself (``kdtune.registry.registry_of``) and its entries are registered."""

from kdtune import attacks, data, losses, methods, models, penalties  # noqa: F401 - imported to enroll
