"""A study's report: trials/pareto CSVs, pairwise front plots, hypervolume, Markdown and HTML.

``write_report`` writes everything into one directory; ``hypervolume_of`` is the number it
reports, for the study layer to log.
"""

from kdtune.report._tables import hypervolume_of
from kdtune.report._write import HYPERVOLUME_FORMAT, write_report

__all__ = ["HYPERVOLUME_FORMAT", "hypervolume_of", "write_report"]
