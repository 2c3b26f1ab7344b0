"""Job files for cluster schedulers (Slurm, Kubernetes): they run the same per-node launcher."""
