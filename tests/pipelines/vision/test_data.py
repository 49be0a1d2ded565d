import csv

import numpy as np
import pytest
from PIL import Image

from pipelines.vision.config import load_config
from pipelines.vision.data import build_heads, label_matrix, list_fashion, load_dataset, read_styles, training_table
from pipelines.vision.preprocessing import PreprocessSpec

from .conftest import REAL_DATA

HEADER = ["id", "gender", "masterCategory", "subCategory", "articleType", "baseColour", "season", "year", "usage",
          "productDisplayName"]


def _fake_fashion(root, n_ok=5):
    img_dir = root / "fashion-products" / "images"
    img_dir.mkdir(parents=True)
    rows = []
    for i in range(n_ok):
        Image.new("RGB", (60, 80), (i * 40, 10, 10)).save(img_dir / f"{i}.jpg")
        rows.append([str(i), "Men", "Apparel", "Topwear", "Tshirts" if i % 2 else "Shirts", "Red", "Summer", "2012",
                     "Casual", f"Brand Men Red Tee {i}"])
    (img_dir / "100.jpg").write_bytes(b"\xff\xd8\xff garbage")  # corrupt
    rows.append(["100", "Men", "Apparel", "Topwear", "Tshirts", "Red", "Summer", "2012", "Casual", "Corrupt"])
    rows.append(["101", "Men", "Apparel", "Topwear", "Tshirts", "Red", "Summer", "2012", "Casual", "Missing"])
    with open(root / "fashion-products" / "styles.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(HEADER)
        w.writerows(rows)


def test_missing_and_corrupt_images_are_skipped_and_counted(tmp_path):
    _fake_fashion(tmp_path)
    spec = PreprocessSpec(height=32, width=24)
    d = load_dataset("fashion", tmp_path, spec, cache_dir=tmp_path / "cache")
    assert len(d) == 5 and d.images.shape == (5, 32, 24, 3)
    assert d.skipped == {"missing": 1, "corrupt": 1} and sorted(d.skipped_ids) == ["100", "101"]
    # second load comes from the cache and reports the same counts
    d2 = load_dataset("fashion", tmp_path, spec, cache_dir=tmp_path / "cache")
    assert d2.skipped == d.skipped and np.array_equal(d2.images, d.images) and d2.ids == d.ids


def test_unquoted_comma_in_title_is_joined_back_and_short_rows_are_skipped(tmp_path, caplog):
    (tmp_path / "fashion-products").mkdir()
    (tmp_path / "fashion-products" / "styles.csv").write_text(
        ",".join(HEADER) + "\n"
        "1,Men,Apparel,Topwear,Shirts,Blue,Summer,2012,Casual,Nike Men Blue Shirt\n"
        "2,Women,Apparel,Topwear,Tops,Red,Summer,2012,Casual,Lino Perros Women Red, White,Top\n"  # unquoted commas
        "3,Men,Apparel,Topwear\n"  # too few fields
        " 4 ,Men,Apparel,Topwear,Shirts,Blue,Summer,2012,Casual,\n", encoding="utf-8")
    with caplog.at_level("WARNING", logger="pipelines.vision.data"):
        records = list_fashion(tmp_path)
    assert [r.id for r in records] == ["1", "2", "4"]
    assert records[1].title == "Lino Perros Women Red, White,Top" and records[1].attrs["articleType"] == "Tops"
    assert records[2].title is None and records[2].attrs["usage"] == "Casual"
    assert all(set(r.attrs) == set(HEADER[1:-1]) for r in records)
    assert "skipped 1 malformed row(s)" in caplog.text and "line 4" in caplog.text
    rows, malformed = read_styles(tmp_path / "fashion-products" / "styles.csv")
    assert malformed == 1 and [list(r) for r in rows] == [HEADER] * 3  # no overflow key left in a row


def test_clothing_corrupt_photo_skipped(tmp_path):
    for split, cls in (("train", "hat"), ("test", "dress")):
        p = tmp_path / "clothing" / split / cls
        p.mkdir(parents=True)
        Image.new("RGB", (40, 50), (1, 2, 3)).save(p / f"{split}-ok.jpg")
    (tmp_path / "clothing" / "train" / "hat" / "broken.jpg").write_bytes(b"nope")
    d = load_dataset("clothing", tmp_path, PreprocessSpec(height=16, width=16))
    assert sorted(d.ids) == ["test-ok", "train-ok"] and d.skipped["corrupt"] == 1
    assert d.attrs["clothing_class"][d.ids.index("test-ok")] == "dress"


def test_missing_data_dir_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="styles.csv not found"):
        load_dataset("fashion", tmp_path, PreprocessSpec())


def test_heads_and_label_masks_across_datasets(synthetic_datasets):
    cfg = load_config()
    heads = build_heads(synthetic_datasets, cfg)
    names = [h.name for h in heads]
    assert names == ["articleType", "subCategory", "baseColour", "gender", "usage", "clothing_class"]
    x, y, src = training_table(synthetic_datasets, heads, "train")
    assert len(x) == len(y) == len(src)
    fashion_rows, clothing_rows = y[src == 0], y[src == 1]
    ci = names.index("clothing_class")
    assert (fashion_rows[:, ci] == -1).all() and (fashion_rows[:, :ci] >= 0).all()
    assert (clothing_rows[:, :ci] == -1).all() and (clothing_rows[:, ci] >= 0).all()
    # vocabulary comes from the train split; an unseen label is masked, not mis-labelled
    d = synthetic_datasets["fashion"]
    d.attrs["articleType"][0] = "NeverSeen"
    assert label_matrix(d, heads, np.array([0]))[0, 0] == -1


@pytest.mark.skipif(not (REAL_DATA / "fashion-products" / "styles.csv").is_file(), reason="shared data not present")
def test_real_fashion_subset_loads_with_deterministic_splits(tmp_path):
    cfg = load_config(None, [f"data.cache_dir={tmp_path}", "input.height=40", "input.width=32"])
    a = load_dataset("fashion", REAL_DATA, cfg.input.spec(), split_cfg=cfg.data.split, max_items=50)
    b = load_dataset("fashion", REAL_DATA, cfg.input.spec(), split_cfg=cfg.data.split, max_items=50, cache_dir=tmp_path)
    assert a.ids == b.ids and a.manifest() == b.manifest() and len(a) == 50
    assert set(a.split) <= {"train", "val", "test"} and a.titles and all(isinstance(t, str) for t in a.titles)
    assert {"articleType", "baseColour", "gender", "usage", "subCategory"} <= set(a.attrs)
