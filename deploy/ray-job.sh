#!/usr/bin/env bash
# Run a kdtune study as a Ray job on a running Ray cluster: the driver (Optuna, MLflow, the report) runs
# on the head node, the trials on whichever nodes have the CPUs/GPUs of `resources:`.
#
#   deploy/ray-job.sh [STUDY]                                   # default studies/pareto_mnist.yaml
#   RAY_DASHBOARD=http://head:8265 KDTUNE_ROOT=/mnt/shared/kdtune deploy/ray-job.sh studies/smoke.yaml
#
# `kdtune submit` validates the study here, ships this folder (and plugin packages outside it) to the job,
# and with --wait streams the job's logs and exits with its outcome. The job runs from a temporary copy
# of this folder, so every output must live on storage every node mounts: --root DIR puts the reports,
# Ray's storage, the Optuna and MLflow stores and the cache under DIR/<study> (or give absolute paths /
# database URLs in the study file and drop --root). Each submission then adds search.budget trials to the
# same study. Needs `pip install -e ".[cluster]"` here and kdtune's dependencies on the cluster's nodes.
# See docs/cluster.md.
set -euo pipefail

DASHBOARD="${RAY_DASHBOARD:-http://127.0.0.1:8265}"  # the dashboard (job API) address, not the GCS one
STUDY="${1:-studies/pareto_mnist.yaml}"
ROOT="${KDTUNE_ROOT:-/mnt/shared/kdtune}"

exec python -m kdtune submit "$STUDY" --address "$DASHBOARD" --root "$ROOT" --wait
