"""Evaluation metrics: feature backbones, feature-space distances, reconstruction and representation quality.

Generative metrics are named after the backbone that produced their features (`fd_classifier`,
`kid_inception`, ...); only the InceptionV3 Fréchet distance is called FID (`fid_inception`). Every
metric name the project logs, and which side of it is better, is defined once in `names.py`.
"""
