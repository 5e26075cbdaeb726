"""A study's report: trials/pareto CSVs, pairwise front plots, hypervolume, Markdown and HTML.

``write_report`` writes everything into one directory; ``hypervolume_of`` is the number it
reports, for the study layer to log.
"""

from kdtune.report._tables import hypervolume_of
from kdtune.report._write import HYPERVOLUME_FORMAT, write_report

__all__ = ["HYPERVOLUME_FORMAT", "hypervolume_of", "preload_report", "write_report"]


def preload_report() -> None:
    """Import the libraries ``write_report`` imports on first use (matplotlib, plotly, jinja2; about a
    second), e.g. from a thread while the sweep runs."""
    import jinja2  # noqa: F401
    import plotly.graph_objects  # noqa: F401
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
    from matplotlib.figure import Figure  # noqa: F401
    from plotly.offline import get_plotlyjs  # noqa: F401
