"""Pinterest-style weak labels: cluster product-title tokens into a fixed number of classes.

Titles are long-tailed (brands, rare article names); clustering TF-IDF vectors of
their tokens into K clusters turns them into a K-way classification target that
every item gets, with rare titles folded into their nearest common cluster.
The vectoriser and k-means are fitted on TRAIN titles only; other splits are assigned.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

TOKEN_RE = re.compile(r"[a-z]+")
STOPWORDS = frozenset({"and", "of", "the", "with", "for", "in", "by", "s", "a", "set", "pack", "pc", "pcs"})


def tokenize(title: str | None) -> list[str]:
    if not title:
        return []
    return [t for t in TOKEN_RE.findall(title.lower()) if t not in STOPWORDS and len(t) > 1]


@dataclass
class TitleClusterer:
    num_clusters: int = 32
    min_df: int = 2
    max_features: int = 4000
    seed: int = 0

    def fit(self, titles: list[str | None]) -> "TitleClusterer":
        from sklearn.cluster import KMeans
        from sklearn.feature_extraction.text import TfidfVectorizer

        docs = [" ".join(tokenize(t)) for t in titles]
        if sum(bool(d) for d in docs) < self.num_clusters:
            raise ValueError(f"need at least {self.num_clusters} non-empty titles to fit {self.num_clusters} clusters")
        self.vectorizer_ = TfidfVectorizer(min_df=self.min_df, max_features=self.max_features, sublinear_tf=True,
                                           token_pattern=r"(?u)\b\w+\b")
        x = self.vectorizer_.fit_transform(docs)
        self.kmeans_ = KMeans(n_clusters=self.num_clusters, n_init=4, random_state=self.seed).fit(x)
        return self

    def predict(self, titles: list[str | None]) -> np.ndarray:
        """Cluster id per title; -1 for an empty title or one with no known token."""
        docs = [" ".join(tokenize(t)) for t in titles]
        x = self.vectorizer_.transform(docs)
        pred = self.kmeans_.predict(x).astype(np.int64)
        empty = np.asarray(x.getnnz(axis=1) == 0)
        pred[empty] = -1
        return pred

    def top_terms(self, n: int = 5) -> list[list[str]]:
        vocab = np.asarray(self.vectorizer_.get_feature_names_out())
        order = np.argsort(-self.kmeans_.cluster_centers_, axis=1)[:, :n]
        return [vocab[o].tolist() for o in order]


def add_title_clusters(dataset, cfg, column: str = "title_cluster") -> TitleClusterer:
    """Fit on the train split's titles, write labels ``c<k>`` (None when unassigned) into ``dataset.attrs[column]``."""
    if dataset.titles is None:
        raise ValueError(f"dataset {dataset.name!r} has no titles")
    tr = dataset.indices("train")
    clus = TitleClusterer(cfg.num_clusters, cfg.min_df, cfg.max_features, cfg.seed).fit([dataset.titles[i] for i in tr])
    pred = clus.predict(dataset.titles)
    dataset.attrs[column] = [f"c{p:03d}" if p >= 0 else None for p in pred]
    return clus
