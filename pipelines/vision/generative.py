"""Generative text-to-image retrieval evaluation (Etsy): title -> generated image -> kNN over the catalogue.

Score: recall@k of the listing the title belongs to (exact item) and of its articleType.
Generators sit behind ``TextToImageGenerator``; production loads a (fast) Stable Diffusion
pipeline from a local path with diffusers; tests build a tiny randomly initialised pipeline
from config objects (no weights, no hub) to exercise the same code path.
"""

from __future__ import annotations

import hashlib
import json
import string
import tempfile
import time
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from PIL import Image

from .embeddings import embed_images
from .metrics import retrieval_metrics
from .preprocessing import PreprocessSpec, resize_to_input


class TextToImageGenerator(Protocol):
    name: str

    def generate(self, prompts: list[str], seed: int = 0) -> list[Image.Image]: ...


class DiffusersGenerator:
    """Wraps any diffusers text-to-image pipeline."""

    def __init__(self, pipe, *, steps: int = 4, guidance_scale: float = 0.0, image_size: int | None = None,
                 name: str = "diffusers", batch_size: int = 4):
        self.pipe, self.steps, self.guidance_scale = pipe, steps, guidance_scale
        self.image_size, self.name, self.batch_size = image_size, name, batch_size
        self.pipe.set_progress_bar_config(disable=True)

    @classmethod
    def from_path(cls, path: str | Path, *, device: str | None = None, **kw) -> "DiffusersGenerator":
        from diffusers import AutoPipelineForText2Image

        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"text-to-image pipeline not found at {path}")
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = torch.float16 if device.startswith("cuda") else torch.float32
        pipe = AutoPipelineForText2Image.from_pretrained(str(path), torch_dtype=dtype, local_files_only=True)
        if hasattr(pipe, "safety_checker"):
            pipe.safety_checker = None
        return cls(pipe.to(device), name=f"diffusers:{path.name}", **kw)

    @torch.no_grad()
    def generate(self, prompts: list[str], seed: int = 0) -> list[Image.Image]:
        out: list[Image.Image] = []
        for s in range(0, len(prompts), self.batch_size):
            chunk = prompts[s:s + self.batch_size]
            gen = torch.Generator("cpu").manual_seed(seed + s)
            kw = {"height": self.image_size, "width": self.image_size} if self.image_size else {}
            res = self.pipe(chunk, num_inference_steps=self.steps, guidance_scale=self.guidance_scale, generator=gen,
                            output_type="pil", **kw)
            out.extend(res.images)
        return out


def _tiny_tokenizer(dirpath: Path):
    from transformers import CLIPTokenizer

    chars = string.ascii_lowercase + string.digits + "'-.,&/()"
    vocab = ["<|startoftext|>", "<|endoftext|>"] + list(chars) + [c + "</w>" for c in chars]
    (dirpath / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (dirpath / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(dirpath / "vocab.json"), str(dirpath / "merges.txt"), model_max_length=32)


def tiny_random_pipeline(seed: int = 0, image_size: int = 32):
    """A StableDiffusionPipeline with tiny randomly initialised components (UNet, VAE, CLIP text encoder)."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as d:
        tok = _tiny_tokenizer(Path(d))
    text_dim = 16
    text = CLIPTextModel(CLIPTextConfig(vocab_size=len(tok), hidden_size=text_dim, intermediate_size=32,
                                        num_attention_heads=2, num_hidden_layers=1, max_position_embeddings=32,
                                        bos_token_id=0, eos_token_id=1, pad_token_id=1, projection_dim=text_dim))
    unet = UNet2DConditionModel(sample_size=image_size // 2, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(8, 16), norm_num_groups=4, cross_attention_dim=text_dim,
                                attention_head_dim=2,
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"))
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8),
                        norm_num_groups=4, layers_per_block=1, sample_size=image_size,
                        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
                        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"))
    sched = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                          set_alpha_to_one=False, steps_offset=1)
    return StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tok, unet=unet, scheduler=sched,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def build_generator(gcfg) -> TextToImageGenerator:
    if gcfg.kind == "tiny-random":
        size = min(gcfg.image_size, 64)
        return DiffusersGenerator(tiny_random_pipeline(gcfg.seed, size), steps=min(gcfg.steps, 2), guidance_scale=1.0,
                                  image_size=size, name="tiny-random-sd")
    if not gcfg.path:
        raise ValueError("generative.path must point at a local diffusers pipeline directory for kind=diffusers")
    return DiffusersGenerator.from_path(gcfg.path, steps=gcfg.steps, guidance_scale=gcfg.guidance_scale,
                                        image_size=gcfg.image_size)


def pick_queries(dataset, num: int, split: str = "test") -> np.ndarray:
    """Deterministic sample of items with a title (ordered by a hash of the id)."""
    rows = [i for i in dataset.indices(split) if dataset.titles and dataset.titles[i]]
    rows.sort(key=lambda i: hashlib.sha1(f"gen:{dataset.ids[i]}".encode()).hexdigest())
    return np.asarray(rows[:num], np.int64)


def generative_eval(embed_net, dataset, generator: TextToImageGenerator, spec: PreprocessSpec, *, num_queries: int = 32,
                    ks: tuple[int, ...] = (1, 5, 10, 20), seed: int = 0, batch_size: int = 64,
                    gallery_embeddings: np.ndarray | None = None, label: str = "articleType") -> dict:
    """Generate one image per title, embed it, search the catalogue (all items of ``dataset``)."""
    t0 = time.time()
    q_rows = pick_queries(dataset, num_queries)
    if len(q_rows) == 0:
        raise ValueError("no test item with a title to use as a generative query")
    prompts = [dataset.titles[i] for i in q_rows]
    images = generator.generate(prompts, seed=seed)
    if len(images) != len(prompts):
        raise RuntimeError(f"generator returned {len(images)} images for {len(prompts)} prompts")
    t_gen = time.time() - t0
    q_pix = np.stack([resize_to_input(im, spec) for im in images])
    embed_net.eval()
    q = embed_images(embed_net, q_pix, spec, batch_size=batch_size, desc="embed generated")
    g = gallery_embeddings if gallery_embeddings is not None else embed_images(embed_net, dataset.images, spec,
                                                                              batch_size=batch_size, desc="embed catalogue")
    listing = retrieval_metrics(q, [dataset.ids[i] for i in q_rows], g, dataset.ids, ks=ks, map_k=max(ks))
    labels = dataset.attrs[label]
    cat = retrieval_metrics(q, [labels[i] for i in q_rows], g, labels, ks=ks, map_k=max(ks))
    metrics = {f"listing_recall@{k}": listing[f"recall@{k}"] for k in ks}
    metrics.update({f"{label}_p@1": cat["p@1"], **{f"{label}_recall@{k}": cat[f"recall@{k}"] for k in ks}})
    return {"generator": getattr(generator, "name", type(generator).__name__), "num_queries": int(len(q_rows)),
            "gallery": int(len(dataset)), "metrics": metrics, "generate_seconds": round(t_gen, 2),
            "seconds": round(time.time() - t0, 2), "examples": [{"id": dataset.ids[i], "title": dataset.titles[i],
                                                                 "top1": dataset.ids[int(listing["_ranked"][j, 0])]}
                                                                for j, i in enumerate(q_rows[:5])]}
