"""The demo catalogue loader reads styles.csv by the training data's rule (pipelines.vision.data.read_styles)."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.ingest.catalogue import fashion_products
from services.ingest.settings import DATA_DIR

HEADER = "id,gender,masterCategory,subCategory,articleType,baseColour,season,year,usage,productDisplayName"
T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def _catalogue(root: Path, lines: list[str], ids: list[str]) -> Path:
    images = root / "fashion-products" / "images"
    images.mkdir(parents=True)
    real = sorted((DATA_DIR / "fashion-products" / "images").glob("*.jpg"))[:1]
    if not real:
        pytest.fail(f"real images missing under {DATA_DIR} (see ../shared/data/README.md)")
    for i in ids:
        shutil.copy(real[0], images / f"{i}.jpg")
    (root / "fashion-products" / "styles.csv").write_text("\n".join([HEADER, *lines]) + "\n", encoding="utf-8")
    return root


def test_unquoted_comma_in_title_is_kept_short_rows_skipped_ids_stripped(tmp_path: Path,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    root = _catalogue(tmp_path, [
        "1,Men,Apparel,Topwear,Shirts,Blue,Summer,2012,Casual,Nike Men Blue Shirt",
        "2,Women,Apparel,Topwear,Tops,Red,Summer,2012,Casual,Lino Perros Women Red, White Top",  # unquoted comma
        "3,Men,Apparel,Topwear",  # too few fields: no title, no articleType
        " 4 ,Men,Apparel,Topwear, Shirts ,Blue,Summer,2012,Casual,",
        "5,Men,Apparel,Topwear,Shirts,Blue,Summer,2012,Casual,No Image",
    ], ["1", "2", "3", "4"])
    with caplog.at_level("WARNING"):
        events = list(fashion_products(root, now=T0))
    assert [e.id for e in events] == ["fp-1", "fp-2", "fp-4"]
    by_id = {e.id: e for e in events}
    assert by_id["fp-2"].title == "Lino Perros Women Red, White Top" and by_id["fp-2"].category == "Tops"
    assert by_id["fp-4"].title == "Shirts" and by_id["fp-4"].category == "Shirts"  # no title: the article type
    assert by_id["fp-4"].image_uri == str(root / "fashion-products" / "images" / "4.jpg")
    assert "skipped 1 malformed row(s)" in caplog.text
