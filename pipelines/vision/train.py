"""Low-resource multi-task fine-tuning.

Stage 1: backbone frozen; pooled features are computed once (identity + flip views) and the
         projection + heads are trained on them (cheap).
Stage 2: the last ``unfreeze_blocks`` backbone blocks are unfrozen with a lower LR (layer-wise);
         when the backbone is EfficientNet-family and ``prefix_cache`` is on, activations of the
         frozen prefix are computed once per view and reused every epoch (CPU speed-up).
AdamW + cosine schedule with warmup, label smoothing, masked multi-dataset loss, AMP and
channels_last on GPU, DDP under torchrun, checkpoint after every epoch + exact resume.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .augment import augment_batch
from .backbones import check_backbone
from .data import CLOTHING, FASHION, Dataset, HeadSpec, build_heads, label_matrix, load_datasets
from .distributed import init_distributed, is_main, local_device, shard
from .embeddings import compute_prefix, embed_from_prefix, to_input
from .model import MultiTaskModel, build_model, multitask_loss
from .splits import manifest_hash
from .weak_labels import add_title_clusters

log = logging.getLogger(__name__)
WEAK_HEAD = "title_cluster"


# ----------------------------------------------------------------------------- setup


def configure_threads(cfg) -> None:
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)


def epoch_seed(seed: int, stage: int, epoch: int) -> int:
    return int.from_bytes(hashlib.sha1(f"{seed}:{stage}:{epoch}".encode()).digest()[:4], "big")


@dataclass
class Prepared:
    datasets: dict[str, Dataset]
    heads: list[HeadSpec]
    weak_terms: list[list[str]] | None = None

    @property
    def data_hash(self) -> str:
        return manifest_hash({n: d.manifest() for n, d in self.datasets.items()})

    def skipped(self) -> dict:
        return {n: dict(d.skipped) for n, d in self.datasets.items()}


def prepare_data(cfg, datasets: dict[str, Dataset] | None = None) -> Prepared:
    datasets = datasets if datasets is not None else load_datasets(cfg)
    extra, terms = {}, None
    if cfg.weak_labels.enabled and FASHION in datasets and datasets[FASHION].titles is not None:
        clus = add_title_clusters(datasets[FASHION], cfg.weak_labels, WEAK_HEAD)
        terms = clus.top_terms()
        extra[WEAK_HEAD] = (FASHION, WEAK_HEAD, cfg.weak_labels.weight)
    heads = build_heads(datasets, cfg, extra)
    return Prepared(datasets, heads, terms)


class PrefixStore:
    """Frozen-prefix activations per (dataset, view, rows), computed once and reused."""

    def __init__(self, model: MultiTaskModel, cfg, device: torch.device):
        self.model, self.cfg, self.device = model, cfg, device
        self.spec = cfg.input.spec()
        self._cache: dict[tuple, torch.Tensor] = {}
        self.fingerprint = self._fingerprint()

    def _fingerprint(self) -> str:
        h = hashlib.sha1(str(self.model.backbone.split_at).encode())
        for p in self._prefix_params():
            h.update(p.detach().cpu().float().numpy().tobytes()[:4096])
            h.update(str(float(p.detach().float().sum())).encode())
        return h.hexdigest()

    def _prefix_params(self):
        bb = self.model.backbone
        if not bb.has_prefix:
            return []
        m = bb.model
        mods = [m.conv_stem, m.bn1, *list(m.blocks)[: bb.split_at]]
        return [t for mod in mods for t in list(mod.parameters()) + list(mod.buffers())]

    def get(self, ds: Dataset, rows: np.ndarray, view: int = 0) -> torch.Tensor:
        if view == 0:
            key = (ds.name, 0, None)
            if key not in self._cache:
                self._cache[key] = self._compute(ds.images, 0, f"prefix {ds.name}")
            return self._cache[key][torch.as_tensor(rows, dtype=torch.long)]
        key = (ds.name, view, hashlib.sha1(np.asarray(rows, np.int64).tobytes()).hexdigest())
        if key not in self._cache:
            self._cache[key] = self._compute(ds.images[rows], view, f"prefix {ds.name} view{view}")
        return self._cache[key]

    def _compute(self, images: np.ndarray, view: int, desc: str) -> torch.Tensor:
        return compute_prefix(self.model.backbone, images, self.spec, batch_size=self.cfg.train.eval_batch_size,
                              view=view, seed=self.cfg.seed, aug_cfg=self.cfg.train.augment, device=self.device,
                              desc=desc)


class _Step(nn.Module):
    """Single forward used for training so DDP sees one module: input -> head logits."""

    def __init__(self, model: MultiTaskModel):
        super().__init__()
        self.model = model

    def forward(self, inp: torch.Tensor, mode: str) -> dict[str, torch.Tensor]:
        m = self.model
        if mode == "features":
            emb = m.neck(inp)
        elif mode == "prefix":
            emb = m.neck(m.backbone.trunk(inp))
        else:
            emb = m.neck(m.backbone(inp))
        return m.head_logits(emb)


def _set_train_mode(model: MultiTaskModel, stage: int, freeze_bn: bool = True) -> None:
    model.train()
    if stage == 1:
        model.backbone.eval()
        return
    # stage 2: the backbone trains (dropout / DropPath active); only BatchNorm statistics may stay frozen
    for mod in model.backbone.modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm) and (
                freeze_bn or not any(p.requires_grad for p in mod.parameters())):
            mod.eval()


def _cosine_lambda(total_steps: int, warmup_steps: int):
    def f(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        prog = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, prog)))

    return f


@dataclass
class TrainResult:
    model: MultiTaskModel
    prepared: Prepared
    history: list[dict] = field(default_factory=list)
    weights_info: dict = field(default_factory=dict)
    store: PrefixStore | None = None
    seconds: float = 0.0
    device: str = "cpu"


class Trainer:
    def __init__(self, cfg, out_dir: Path, prepared: Prepared | None = None, progress: bool = True):
        check_backbone(cfg.model.backbone, cfg.model.weights)
        configure_threads(cfg)
        self.cfg = cfg
        self.out = Path(out_dir)
        self.progress = progress
        self.device = local_device(cfg.train.device)
        self.rank, self.world = init_distributed(self.device)
        self.prepared = prepared or prepare_data(cfg)
        self.heads = self.prepared.heads
        self.head_names = [h.name for h in self.heads]
        self.head_weights = [h.weight for h in self.heads]
        torch.manual_seed(cfg.seed)
        self.model, self.weights_info = build_model(cfg, {h.name: len(h.classes) for h in self.heads})
        self.model.backbone.set_trainable_blocks(cfg.train.stage2.unfreeze_blocks)
        self.model.to(self.device)
        cuda = self.device.type == "cuda"
        self.amp = cfg.train.amp == "on" or (cfg.train.amp == "auto" and cuda)
        self.channels_last = cfg.train.channels_last == "on" or (cfg.train.channels_last == "auto" and cuda)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.use_prefix = cfg.train.prefix_cache and self.model.backbone.has_prefix
        self.store = PrefixStore(self.model, cfg, self.device) if self.use_prefix else None
        self.history: list[dict] = []
        self.spec = cfg.input.spec()
        self._tables: dict[str, tuple] = {}
        self._stop_after, self._stopped = None, False

    # ------------------------------------------------------------------ data tables

    def table(self, split: str):
        """(uint8 images, labels, [(dataset, rows)]) for a split across datasets."""
        if split not in self._tables:
            xs, ys, parts = [], [], []
            for d in self.prepared.datasets.values():
                rows = d.indices(split)
                xs.append(d.images[rows])
                ys.append(label_matrix(d, self.heads, rows))
                parts.append((d, rows))
            self._tables[split] = (np.concatenate(xs), torch.from_numpy(np.concatenate(ys)), parts)
        return self._tables[split]

    def prefix_views(self, split: str, n_views: int) -> list[torch.Tensor]:
        _, _, parts = self.table(split)
        return [torch.cat([self.store.get(d, rows, v) for d, rows in parts]) for v in range(n_views)]

    @torch.no_grad()
    def feature_views(self, split: str, n_views: int) -> list[torch.Tensor]:
        """Pooled frozen-backbone features per view (stage 1 inputs)."""
        bb = self.model.backbone
        bb.eval()
        if self.use_prefix:
            return [torch.from_numpy(embed_from_prefix(bb.trunk, p, batch_size=self.cfg.train.eval_batch_size,
                                                       device=self.device, desc=f"features {split}"))
                    for p in self.prefix_views(split, n_views)]
        from .augment import make_view
        from .embeddings import embed_images

        x, _, _ = self.table(split)
        return [torch.from_numpy(embed_images(bb, make_view(x, v, self.cfg.seed, self.cfg.train.augment, self.spec.pad_value),
                                              self.spec, batch_size=self.cfg.train.eval_batch_size, device=self.device,
                                              desc=f"features {split}", channels_last=self.channels_last))
                for v in range(n_views)]

    # ------------------------------------------------------------------ checkpointing

    @property
    def ckpt_path(self) -> Path:
        return self.out / "checkpoints" / "last.pt"

    def save_checkpoint(self, stage: int, epoch: int, opt, sched) -> None:
        if not is_main():
            return
        self.ckpt_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.ckpt_path.with_suffix(".tmp")
        torch.save({"stage": stage, "epoch": epoch, "model": self.model.state_dict(), "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(), "history": self.history, "heads": [h.to_dict() for h in self.heads],
                    "data_hash": self.prepared.data_hash, "config": self.cfg.model_dump(mode="json")}, tmp)
        tmp.replace(self.ckpt_path)

    def load_checkpoint(self) -> dict | None:
        if not self.ckpt_path.is_file():
            return None
        ck = torch.load(self.ckpt_path, map_location=self.device, weights_only=False)
        self._check_resumable(ck)
        self.model.load_state_dict(ck["model"])
        self.history = ck["history"]
        return ck

    def _check_resumable(self, ck: dict) -> None:
        """Refuse a checkpoint of other targets: each head's name AND class list (title_cluster keeps its K
        when the data changes, but KMeans may renumber the clusters), and the data (when recorded)."""
        theirs = [(h["name"], list(h.get("classes") or [])) for h in ck["heads"]]
        ours = [(h.name, list(h.classes)) for h in self.heads]
        if [n for n, _ in theirs] != [n for n, _ in ours]:
            raise ValueError(f"checkpoint {self.ckpt_path} was trained with other heads: {[n for n, _ in theirs]}; "
                             "train without --resume (or in another --out)")
        changed = [n for (n, a), (_, b) in zip(theirs, ours) if a != b]
        if changed:
            raise ValueError(f"checkpoint {self.ckpt_path} was trained with other classes for head(s) "
                             f"{', '.join(changed)} (relabelled targets); train without --resume (or in another --out)")
        if ck.get("data_hash") is not None and ck["data_hash"] != self.prepared.data_hash:
            raise ValueError(f"checkpoint {self.ckpt_path} was trained on other data (data hash "
                             f"{ck['data_hash'][:16]}, now {self.prepared.data_hash[:16]}); train without --resume "
                             "(or in another --out)")

    # ------------------------------------------------------------------ stages

    def _optimizer(self, stage: int):
        sc = self.cfg.train.stage1 if stage == 1 else self.cfg.train.stage2
        m = self.model
        groups = [{"params": list(m.neck.parameters()) + list(m.heads.parameters()), "lr": sc.lr,
                   "weight_decay": sc.weight_decay}]
        if stage == 2:
            groups += m.backbone.param_groups(sc.lr * sc.backbone_lr_mult, sc.weight_decay, sc.layer_decay)
        opt = torch.optim.AdamW(groups, lr=sc.lr)
        return opt, sc

    def _run_stage(self, stage: int, start_epoch: int, ck: dict | None) -> None:
        opt, sc = self._optimizer(stage)
        if sc.epochs <= 0:
            return
        bs = self.cfg.train.batch_size
        _, y, _ = self.table("train")
        n_views = max(1, self.cfg.train.prefix_cache_views)
        if stage == 1:
            mode, inputs = "features", self.feature_views("train", n_views)
        elif self.use_prefix:
            mode, inputs = "prefix", self.prefix_views("train", n_views)
        else:
            mode, inputs = "images", None
        n = len(y)
        steps_per_epoch = math.ceil(len(shard(np.arange(n), self.rank, self.world)) / bs)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, _cosine_lambda(steps_per_epoch * sc.epochs, int(steps_per_epoch * sc.warmup_epochs)))
        if ck is not None:
            opt.load_state_dict(ck["optimizer"])
            sched.load_state_dict(ck["scheduler"])
        step_module: nn.Module = _Step(self.model)
        if self.world > 1:
            step_module = nn.parallel.DistributedDataParallel(
                step_module, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=True)
        scaler = torch.amp.GradScaler(enabled=self.amp and self.device.type == "cuda")
        for epoch in range(start_epoch, sc.epochs):
            t0 = time.time()
            s = epoch_seed(self.cfg.seed, stage, epoch)
            torch.manual_seed(s)
            rng = np.random.default_rng(s)
            order = shard(rng.permutation(n), self.rank, self.world)
            views = rng.integers(0, n_views, n)
            _set_train_mode(self.model, stage, self.cfg.train.freeze_bn)
            tot_loss, tot_n, per_head = 0.0, 0, {h: [0, 0] for h in self.head_names}
            batches = range(0, len(order), bs)
            bar = tqdm(batches, desc=f"stage{stage} epoch {epoch + 1}/{sc.epochs}", unit="batch", leave=False,
                       disable=not (self.progress and is_main()))
            for b0 in bar:
                idx = order[b0:b0 + bs]
                inp = self._batch_input(mode, inputs, idx, views, rng)
                with torch.autocast(self.device.type, enabled=self.amp,
                                    dtype=torch.bfloat16 if self.device.type == "cpu" else torch.float16):
                    logits = step_module(inp, mode)
                loss, stats = multitask_loss(logits, y[idx].to(self.device), self.head_names, self.head_weights,
                                             self.cfg.train.label_smoothing)
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                sched.step()
                tot_loss += float(loss.detach()) * len(idx)
                tot_n += len(idx)
                for h, st in stats.items():
                    per_head[h][0] += st["correct"]
                    per_head[h][1] += st["n"]
                bar.set_postfix(loss=f"{tot_loss / tot_n:.3f}")
            rec = {"stage": stage, "epoch": epoch + 1, "train_loss": tot_loss / max(1, tot_n),
                   "lr": opt.param_groups[0]["lr"], "seconds": round(time.time() - t0, 2),
                   "train_acc": {h: c / t for h, (c, t) in per_head.items() if t}}
            rec["val_acc"] = self.val_accuracy(stage)
            self.history.append(rec)
            if is_main():
                log.info("stage %d epoch %d/%d loss %.4f val %s (%.1fs)", stage, epoch + 1, sc.epochs, rec["train_loss"],
                         {k: round(v, 3) for k, v in rec["val_acc"].items()}, rec["seconds"])
                self._write_metrics_log()
            if (epoch + 1) % self.cfg.train.checkpoint_every == 0 or epoch + 1 == sc.epochs:
                self.save_checkpoint(stage, epoch + 1, opt, sched)
            if self._stop_after == (stage, epoch + 1):
                self._stopped = True
                return

    def _batch_input(self, mode: str, inputs, idx: np.ndarray, views: np.ndarray, rng) -> torch.Tensor:
        if mode in ("features", "prefix"):
            v = views[idx]
            first = inputs[0][torch.as_tensor(idx[:1])]
            out = first.new_empty((len(idx),) + tuple(first.shape[1:]))
            for k in np.unique(v):
                sel = np.flatnonzero(v == k)
                out[torch.as_tensor(sel)] = inputs[k][torch.as_tensor(idx[sel])]
            out = out.to(self.device)
            return out
        x, _, _ = self.table("train")
        a = self.cfg.train.augment
        batch = augment_batch(x[idx], rng, flip=a.hflip, crop_pad=a.crop_pad, brightness=a.brightness,
                              contrast=a.contrast, pad_value=self.spec.pad_value)
        return to_input(batch, self.spec, self.device, self.channels_last)

    @torch.no_grad()
    def val_accuracy(self, stage: int) -> dict[str, float]:
        """Per-head top-1 accuracy on the val split (identity view)."""
        _, y, parts = self.table("val")
        if len(y) == 0:
            return {}
        m = self.model
        m.eval()
        bs = self.cfg.train.eval_batch_size
        if self.use_prefix:
            p = torch.cat([self.store.get(d, rows, 0) for d, rows in parts])
            emb = torch.from_numpy(embed_from_prefix(m.embed_prefix, p, batch_size=bs, device=self.device, desc="val"))
        else:
            from .embeddings import embed_images

            x, _, _ = self.table("val")
            emb = torch.from_numpy(embed_images(m, x, self.spec, batch_size=bs, device=self.device, desc="val",
                                                channels_last=self.channels_last))
        logits = m.head_logits(emb.to(self.device))
        out = {}
        for j, h in enumerate(self.head_names):
            mask = y[:, j] >= 0
            if mask.any():
                out[h] = float((logits[h][mask.to(self.device)].argmax(1).cpu() == y[mask, j]).float().mean())
        return out

    def _write_metrics_log(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.out / "train_metrics.jsonl", "w") as fh:
            for rec in self.history:
                fh.write(json.dumps(rec) + "\n")

    def fit(self, resume: bool = False, stop_after: tuple[int, int] | None = None) -> TrainResult:
        """Run both stages (continuing from the last checkpoint when ``resume``).

        ``stop_after=(stage, epoch)`` stops right after that epoch's checkpoint, with the LR
        schedule of the full run (simulates an interrupted job; used by the resume test).
        """
        t0 = time.time()
        self._stop_after, self._stopped = stop_after, False
        ck = self.load_checkpoint() if resume else None
        start_stage, start_epoch = (1, 0) if ck is None else (ck["stage"], ck["epoch"])
        if ck is not None and start_stage == 1 and start_epoch >= self.cfg.train.stage1.epochs:
            start_stage, start_epoch, ck = 2, 0, None
        for stage in (1, 2):
            if stage < start_stage:
                continue
            self._run_stage(stage, start_epoch if stage == start_stage else 0, ck if stage == start_stage else None)
            if self._stopped:
                break
        return self._result(t0)

    def _result(self, t0: float) -> TrainResult:
        self.model.eval()
        return TrainResult(self.model, self.prepared, self.history, self.weights_info, self.store,
                           time.time() - t0, str(self.device))


def save_model(result: TrainResult, cfg, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": result.model.state_dict(), "heads": [h.to_dict() for h in result.prepared.heads],
                "config": cfg.model_dump(mode="json"), "weights_info": result.weights_info,
                "embedding_dim": result.model.embedding_dim, "history": result.history,
                "data_hash": result.prepared.data_hash, "skipped": result.prepared.skipped(),
                "weak_label_terms": result.prepared.weak_terms, "train_seconds": result.seconds}, path)


def load_model(path: Path, device: str = "cpu"):
    """-> (MultiTaskModel in eval mode, saved payload). Builds the backbone with random init then loads weights."""
    from .config import VisionConfig

    payload = torch.load(path, map_location=device, weights_only=False)
    cfg = VisionConfig.model_validate(payload["config"])
    model, _ = build_model(cfg, {h["name"]: h["num_classes"] for h in payload["heads"]}, weights="none")
    model.load_state_dict(payload["state_dict"])
    model.backbone.set_trainable_blocks(cfg.train.stage2.unfreeze_blocks)
    model.eval()
    return model, payload, cfg


def train(cfg, out_dir: Path, *, resume: bool = False, prepared: Prepared | None = None, progress: bool = True) -> TrainResult:
    trainer = Trainer(cfg, out_dir, prepared, progress)
    result = trainer.fit(resume=resume)
    if is_main():
        save_model(result, cfg, Path(out_dir) / "model.pt")
    return result


__all__ = ["Trainer", "TrainResult", "Prepared", "prepare_data", "train", "save_model", "load_model", "CLOTHING"]
