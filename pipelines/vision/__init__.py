"""Visual embedding model: multi-task fine-tuning of timm backbones, offline retrieval evaluation, export.

Modules: config, preprocessing (numpy + PIL only; imported by the serving embedder), data, splits,
weak_labels, backbones, model, augment, embeddings, train, distributed, metrics, evaluate, report,
generative, export, cli (``python -m pipelines.vision.cli --help``).
"""
