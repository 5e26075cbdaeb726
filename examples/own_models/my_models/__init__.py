"""A user's own project: the networks it already had, and the module that plugs them into kdtune."""
