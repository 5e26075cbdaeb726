"""MLflow bookkeeping: the only package that imports mlflow.

``Tracker`` mirrors a study into MLflow (an experiment per study, a parent run per sweep, a child run per
trial); ``load_pytorch_model`` loads a PyTorch model logged to MLflow (a pretrained teacher).
"""

from kdtune.tracking._models import load_pytorch_model
from kdtune.tracking._tracker import PRUNED_TAG, Outcome, Tracker, artifact_root, default_uri

__all__ = ["PRUNED_TAG", "Outcome", "Tracker", "artifact_root", "default_uri", "load_pytorch_model"]
