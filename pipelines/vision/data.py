"""Datasets from ../shared/data: listing, decoding (with a uint8 cache), labels for heads.

A missing or corrupt image is skipped and counted (``Dataset.skipped``), never a crash.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .preprocessing import ImageDecodeError, PreprocessSpec, load_rgb, resize_to_input
from .splits import assign_splits

log = logging.getLogger(__name__)

FASHION = "fashion"
CLOTHING = "clothing"
CLOTHING_SPLIT_DIRS = ("train", "validation", "test")


@dataclass
class Record:
    id: str
    path: Path
    attrs: dict[str, str | None]
    title: str | None = None


@dataclass
class Dataset:
    name: str
    ids: list[str]
    images: np.ndarray  # uint8 [N, H, W, 3], already resized by preprocessing.resize_to_input
    split: np.ndarray  # str [N] in {"train", "val", "test"}
    attrs: dict[str, list[str | None]]
    titles: list[str | None] | None
    skipped: dict[str, int] = field(default_factory=lambda: {"missing": 0, "corrupt": 0})
    skipped_ids: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def indices(self, *splits: str) -> np.ndarray:
        return np.flatnonzero(np.isin(self.split, list(splits)))

    def manifest(self) -> dict[str, str]:
        return dict(zip(self.ids, self.split.tolist()))


def _clean(v: str | None) -> str | None:
    if v is None:
        return None
    v = v.strip()
    return v or None


STYLES_TITLE = "productDisplayName"  # styles.csv's last column: free text, not always quoted
_OVERFLOW = object()  # DictReader restkey: the fields a row has beyond the header


def read_styles(csv_path: Path) -> tuple[list[dict[str, str]], int]:
    """fashion-products styles.csv as dicts, the one reading rule of every consumer (training data,
    the demo catalogue): -> (rows, malformed).

    A title with an unquoted comma gives its row extra fields: they are joined back into the last
    column (productDisplayName). A row with too few fields is malformed: counted, logged, skipped.
    """
    rows, malformed, first_bad = [], 0, None
    with open(csv_path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh, restkey=_OVERFLOW)  # restval None: a short row's missing fields
        last = (reader.fieldnames or [""])[-1]
        for row in reader:
            extra = row.pop(_OVERFLOW, None)
            if extra and last == STYLES_TITLE:
                row[last] = ",".join([row[last], *extra])
            elif extra or any(v is None for v in row.values()):
                malformed += 1
                first_bad = first_bad or reader.line_num
                continue
            rows.append(row)
    if malformed:
        log.warning("%s: skipped %d malformed row(s) (fields do not match the header), the first at line %d",
                    csv_path, malformed, first_bad)
    return rows, malformed


def list_fashion(root: Path) -> list[Record]:
    base = root / "fashion-products"
    csv_path = base / "styles.csv"
    if not csv_path.is_file():
        raise FileNotFoundError(f"fashion-products styles.csv not found at {csv_path} (set ADREC_DATA_DIR or --data-dir)")
    out = []
    for row in read_styles(csv_path)[0]:
        i = _clean(row.get("id"))
        if not i:
            continue
        attrs = {k: _clean(v) for k, v in row.items() if k not in ("id", STYLES_TITLE)}
        out.append(Record(i, base / "images" / f"{i}.jpg", attrs, _clean(row.get(STYLES_TITLE))))
    return out


def list_clothing(root: Path) -> list[Record]:
    base = root / "clothing"
    if not base.is_dir():
        raise FileNotFoundError(f"clothing data not found at {base} (set ADREC_DATA_DIR or --data-dir)")
    out = []
    for split_dir in CLOTHING_SPLIT_DIRS:
        d = base / split_dir
        if not d.is_dir():
            continue
        for cls_dir in sorted(p for p in d.iterdir() if p.is_dir()):
            for f in sorted(cls_dir.iterdir()):
                if f.suffix.lower() in (".jpg", ".jpeg", ".png"):
                    out.append(Record(f.stem, f, {"clothing_class": cls_dir.name, "source_split": split_dir}))
    return out


def _subset(records: list[Record], max_items: int | None) -> list[Record]:
    if not max_items or len(records) <= max_items:
        return records
    key = lambda r: hashlib.sha1(f"subset:{r.id}".encode()).hexdigest()  # noqa: E731
    keep = {r.id for r in sorted(records, key=key)[:max_items]}
    return [r for r in records if r.id in keep]


def decode_records(records: list[Record], spec: PreprocessSpec, desc: str = "decode") -> tuple[np.ndarray, list[int], dict, list[str]]:
    """Decode + resize every record; returns (images, kept positions, skipped counts, skipped ids)."""
    imgs, kept, skipped, skipped_ids = [], [], {"missing": 0, "corrupt": 0}, []
    for pos, r in enumerate(tqdm(records, desc=desc, unit="img", leave=False)):
        try:
            img = load_rgb(r.path)
        except ImageDecodeError as exc:
            kind = "missing" if not r.path.exists() else "corrupt"
            skipped[kind] += 1
            skipped_ids.append(r.id)
            log.warning("skipping %s image: %s", kind, exc)
            continue
        imgs.append(resize_to_input(img, spec))
        kept.append(pos)
    arr = np.stack(imgs) if imgs else np.zeros((0, spec.height, spec.width, 3), np.uint8)
    return arr, kept, skipped, skipped_ids


def _cache_key(name: str, records: list[Record], spec: PreprocessSpec) -> str:
    h = hashlib.sha1()
    h.update(json.dumps(spec.to_dict(), sort_keys=True).encode())
    h.update(name.encode())
    for r in records:
        try:
            st = r.path.stat()
            sig = f"{r.id}|{r.path}|{st.st_size}|{st.st_mtime_ns}"
        except OSError:
            sig = f"{r.id}|{r.path}|missing"
        h.update(sig.encode())
    return h.hexdigest()[:16]


def load_dataset(name: str, root: Path, spec: PreprocessSpec, *, split_cfg=None, cache_dir: Path | None = None,
                 max_items: int | None = None) -> Dataset:
    records = {FASHION: list_fashion, CLOTHING: list_clothing}[name](root)
    records = _subset(records, max_items)
    cache_file = None
    if cache_dir is not None:
        cache_file = Path(cache_dir) / f"{name}_{spec.height}x{spec.width}_{_cache_key(name, records, spec)}.npz"
    if cache_file is not None and cache_file.is_file():
        z = np.load(cache_file, allow_pickle=False)
        images, kept = z["images"], z["kept"].tolist()
        meta = json.loads(str(z["meta"]))
        skipped, skipped_ids = meta["skipped"], meta["skipped_ids"]
    else:
        images, kept, skipped, skipped_ids = decode_records(records, spec, desc=f"decode {name}")
        if cache_file is not None:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_file.with_suffix(".tmp.npz")
            np.savez(tmp, images=images, kept=np.asarray(kept, np.int64),
                     meta=np.asarray(json.dumps({"skipped": skipped, "skipped_ids": skipped_ids})))
            tmp.replace(cache_file)
    kept_records = [records[i] for i in kept]
    ids = [r.id for r in kept_records]
    s = split_cfg
    splits = assign_splits(ids, s.train, s.val, s.salt) if s is not None else assign_splits(ids)
    keys = sorted({k for r in kept_records for k in r.attrs})
    attrs = {k: [r.attrs.get(k) for r in kept_records] for k in keys}
    titles = [r.title for r in kept_records] if name == FASHION else None
    return Dataset(name, ids, images, np.asarray([splits[i] for i in ids]), attrs, titles, skipped, skipped_ids)


def load_datasets(cfg) -> dict[str, Dataset]:
    """Load the enabled datasets of a VisionConfig."""
    root = cfg.data.resolved_root()
    spec = cfg.input.spec()
    out = {}
    for name, enabled in ((FASHION, cfg.data.fashion.enabled), (CLOTHING, cfg.data.clothing.enabled)):
        if enabled:
            out[name] = load_dataset(name, root, spec, split_cfg=cfg.data.split,
                                     cache_dir=cfg.data.resolved_cache_dir(), max_items=cfg.data.max_items_per_dataset)
    return out


# ----------------------------------------------------------------------------- heads / labels


@dataclass
class HeadSpec:
    name: str
    dataset: str
    column: str
    classes: list[str]
    weight: float = 1.0

    def to_dict(self) -> dict:
        return {"name": self.name, "dataset": self.dataset, "column": self.column,
                "num_classes": len(self.classes), "weight": self.weight, "classes": self.classes}


def build_heads(datasets: dict[str, Dataset], cfg, extra_columns: dict[str, tuple[str, str, float]] | None = None) -> list[HeadSpec]:
    """One head per labelled column; class vocabulary from the TRAIN split only."""
    wanted: list[tuple[str, str, str, float]] = []
    if FASHION in datasets:
        wanted += [(c, FASHION, c, 1.0) for c in cfg.data.fashion.heads]
    if CLOTHING in datasets:
        wanted.append((cfg.data.clothing.head, CLOTHING, "clothing_class", 1.0))
    for head, (ds, col, w) in (extra_columns or {}).items():
        if ds in datasets:
            wanted.append((head, ds, col, w))
    heads = []
    for head, ds, col, w in wanted:
        d = datasets[ds]
        if col not in d.attrs:
            raise KeyError(f"dataset {ds!r} has no column {col!r}")
        tr = d.indices("train")
        classes = sorted({d.attrs[col][i] for i in tr if d.attrs[col][i] is not None})
        if len(classes) < 2:
            log.warning("head %s has <2 classes in train split; skipped", head)
            continue
        heads.append(HeadSpec(head, ds, col, classes, w))
    return heads


def label_matrix(d: Dataset, heads: list[HeadSpec], rows: np.ndarray) -> np.ndarray:
    """int64 [len(rows), n_heads]; -1 where the head does not apply (other dataset / unknown label)."""
    y = np.full((len(rows), len(heads)), -1, np.int64)
    for j, h in enumerate(heads):
        if h.dataset != d.name:
            continue
        lookup = {c: k for k, c in enumerate(h.classes)}
        col = d.attrs[h.column]
        y[:, j] = [lookup.get(col[i], -1) for i in rows]
    return y


def training_table(datasets: dict[str, Dataset], heads: list[HeadSpec], split: str = "train") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Concatenate the given split of every dataset -> (images, labels with -1 masks, dataset index)."""
    xs, ys, src = [], [], []
    for k, d in enumerate(datasets.values()):
        rows = d.indices(split)
        xs.append(d.images[rows])
        ys.append(label_matrix(d, heads, rows))
        src.append(np.full(len(rows), k, np.int64))
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(src)
