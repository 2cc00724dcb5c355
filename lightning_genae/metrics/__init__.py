"""Evaluation metrics: feature backbones, feature-space distances, reconstruction and representation quality;
every name the project logs, with its backbone and better side, is defined once in `names.py`."""
