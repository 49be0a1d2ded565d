import numpy as np
import pytest

from pipelines.vision.config import WeakLabelConfig
from pipelines.vision.weak_labels import TitleClusterer, add_title_clusters, tokenize

TITLES = ([f"Nike Men Black Running Shoes {i}" for i in range(10)] + [f"Titan Women Gold Dial Watch {i}" for i in range(10)]
          + [f"Puma Men Blue Cotton Tshirt {i}" for i in range(10)])


def test_tokenize_drops_digits_stopwords_and_case():
    assert tokenize("ADIDAS Men's Street Red Flip Flop 42") == ["adidas", "men", "street", "red", "flip", "flop"]
    assert tokenize(None) == []


def test_titles_with_shared_tokens_cluster_together_and_deterministically():
    c = TitleClusterer(num_clusters=3, min_df=2, seed=0).fit(TITLES)
    p = c.predict(TITLES)
    groups = [set(p[i * 10:(i + 1) * 10].tolist()) for i in range(3)]
    assert all(len(g) == 1 for g in groups) and len(set.union(*groups)) == 3
    p2 = TitleClusterer(num_clusters=3, min_df=2, seed=0).fit(TITLES).predict(TITLES)
    assert np.array_equal(p, p2)
    assert c.predict(["", "zzz qqq"]).tolist() == [-1, -1]  # no known token -> unassigned (masked)


def test_too_few_titles_is_an_error():
    with pytest.raises(ValueError):
        TitleClusterer(num_clusters=50).fit(TITLES[:5])


def test_fit_uses_train_split_only(synthetic_datasets):
    d = synthetic_datasets["fashion"]
    test_rows = d.indices("test")
    for i in test_rows:  # a token only test items carry must not enter the vocabulary
        d.titles[i] = "leakytoken " + d.titles[i]
    clus = add_title_clusters(d, WeakLabelConfig(num_clusters=3, min_df=1))
    assert "leakytoken" not in clus.vectorizer_.vocabulary_
    assert len(d.attrs["title_cluster"]) == len(d) and {v for v in d.attrs["title_cluster"] if v} <= {"c000", "c001", "c002"}
