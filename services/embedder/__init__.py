"""Embedder service (issue 5): a kserve.Model serving the exported vision model, image in, vector out.

Domain modules (settings, model_bundle, runtime, decoding, batcher, metrics) know nothing of
kserve; protocol.py, model.py, server.py and __main__.py are the kserve adapter.
"""
