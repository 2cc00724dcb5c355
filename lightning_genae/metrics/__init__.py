"""Evaluation metrics: backbones, feature distances, reconstruction, representation; names in names.py."""
