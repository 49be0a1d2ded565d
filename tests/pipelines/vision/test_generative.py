"""Generative text-to-image evaluation: scoring logic with a stub generator, real code path with a tiny
randomly initialised diffusers Stable Diffusion pipeline (no weights, no hub)."""

import numpy as np
import pytest
import torch
from PIL import Image

from pipelines.vision.config import GeneratorConfig
from pipelines.vision.generative import DiffusersGenerator, build_generator, generative_eval, pick_queries
from pipelines.vision.model import build_model
from pipelines.vision.preprocessing import PreprocessSpec


class CatalogueLookup:
    """Stub generator: returns the listing's own catalogue image for its title (a perfect generator)."""

    name = "catalogue-lookup"

    def __init__(self, dataset):
        self.by_title = {t: Image.fromarray(im) for t, im in zip(dataset.titles, dataset.images)}

    def generate(self, prompts, seed=0):
        return [self.by_title[p] for p in prompts]


@pytest.fixture(scope="module")
def embed_net():
    from pipelines.vision.config import load_config

    cfg = load_config(None, ["model.weights=none", "model.embedding_dim=32"])
    torch.manual_seed(0)
    model, _ = build_model(cfg, {"a": 2})
    return model.embedding_net().eval()


def _unique_titles(ds):
    ds.titles = [f"{t} #{i}" for i, t in enumerate(ds.titles)]
    return ds


def test_perfect_generator_retrieves_its_listing(synthetic_datasets, embed_net):
    ds = _unique_titles(synthetic_datasets["fashion"])
    spec = PreprocessSpec(height=32, width=32)
    res = generative_eval(embed_net, ds, CatalogueLookup(ds), spec, num_queries=6, ks=(1, 5))
    m = res["metrics"]
    assert res["num_queries"] == min(6, len(pick_queries(ds, 100)))
    assert m["listing_recall@1"] == 1.0 and m["listing_recall@5"] == 1.0
    assert all(e["id"] == e["top1"] for e in res["examples"])


def test_wrong_generator_scores_low(synthetic_datasets, embed_net):
    ds = _unique_titles(synthetic_datasets["fashion"])
    lookup = CatalogueLookup(ds)
    titles = list(lookup.by_title)

    class Shifted:
        name = "shifted"

        def generate(self, prompts, seed=0):  # returns another listing's image
            return [lookup.by_title[titles[(titles.index(p) + 1) % len(titles)]] for p in prompts]

    res = generative_eval(embed_net, ds, Shifted(), PreprocessSpec(height=32, width=32), num_queries=6, ks=(1,))
    assert res["metrics"]["listing_recall@1"] == 0.0


def test_tiny_random_diffusers_pipeline_end_to_end(synthetic_datasets, embed_net):
    gen = build_generator(GeneratorConfig(kind="tiny-random", image_size=32, steps=2, seed=0))
    assert isinstance(gen, DiffusersGenerator)
    imgs = gen.generate(["red cotton tshirt", "black leather watch"], seed=0)
    assert len(imgs) == 2 and all(im.size == (32, 32) and im.mode == "RGB" for im in imgs)
    again = gen.generate(["red cotton tshirt", "black leather watch"], seed=0)
    assert np.array_equal(np.asarray(imgs[0]), np.asarray(again[0]))  # seeded
    ds = _unique_titles(synthetic_datasets["fashion"])
    res = generative_eval(embed_net, ds, gen, PreprocessSpec(height=32, width=32), num_queries=3, ks=(1, 5))
    assert res["generator"] == "tiny-random-sd" and res["num_queries"] == 3
    for k, v in res["metrics"].items():
        assert 0.0 <= v <= 1.0, k


def test_missing_generator_path_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        build_generator(GeneratorConfig(kind="diffusers", path=str(tmp_path / "no-sd")))
    with pytest.raises(ValueError):
        build_generator(GeneratorConfig(kind="diffusers", path=None))
