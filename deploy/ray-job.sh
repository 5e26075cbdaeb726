#!/usr/bin/env bash
# Run a kdtune study as a Ray job on a running Ray cluster: the driver (Optuna, MLflow, the report) runs
# on the head node, the trials on whichever nodes have the CPUs/GPUs of `resources:`.
#
#   deploy/ray-job.sh [STUDY]            # default studies/pareto_mnist.yaml
#   RAY_DASHBOARD=http://head:8265 deploy/ray-job.sh studies/smoke.yaml
#
# --working-dir . ships this checkout (minus .gitignore'd files) to the head and every worker and puts it on
# PYTHONPATH; kdtune's dependencies (torch, ray[tune], optuna, mlflow, ...) must already be installed there.
# The job's working directory is a temporary copy on the head node, so relative output paths would vanish
# with it. Before submitting, point the study file at storage that the driver and every node can reach:
#   output.reports, output.ray   absolute paths on a filesystem mounted at the same path on every node
#                                (trials write checkpoints and student weights under output.ray from the
#                                node they run on; the driver reads them back for the report)
#   output.optuna                the study's record: a database URL, e.g. postgresql://kdtune@db/kdtune
#                                (required when several drivers share a study; SQLite on a shared path
#                                works only for one driver at a time)
#   tracking.uri                 MLflow: a database URL or an MLflow server (http://mlflow:5000)
#   KDTUNE_CACHE_DIR (below)     the teacher / helper-model cache, shared so nodes reuse one copy
# See docs/cluster.md.
set -euo pipefail

DASHBOARD="${RAY_DASHBOARD:-http://127.0.0.1:8265}"  # the dashboard (job API) address, not the GCS one
STUDY="${1:-studies/pareto_mnist.yaml}"
CACHE="${KDTUNE_CACHE_DIR:-/mnt/shared/kdtune/cache}"

python -m kdtune validate "$STUDY"  # fail here, not on the cluster, on a bad study file

# --address auto: Ray sets $RAY_ADDRESS to the cluster's GCS address for a job's driver, and `auto` uses it.
exec ray job submit --address "$DASHBOARD" --working-dir . \
    --runtime-env-json "{\"env_vars\": {\"KDTUNE_CACHE_DIR\": \"$CACHE\"}}" \
    -- python -m kdtune "$STUDY" --address auto
