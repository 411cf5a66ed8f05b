"""Launching train.py on clusters: SLURM (slurm.py), Cloud TPU VMs (tpu.py), Kubernetes (k8s.py)."""
