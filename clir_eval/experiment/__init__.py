"""Experiment runner: YAML configs, cached steps, manifest, sweeps."""
