"""The gold IMDB sentiment scorer: TF-IDF + logistic regression on reviews never used as prompts.

P(positive | text) in [0, 1]. Trained once (~20 s), cached, its held-out accuracy logged and
stored beside it. It serves two roles: a free, strong oracle (``oracle=reward_model``) and the
gold yardstick for evaluation whatever the oracle is.
"""

from __future__ import annotations

import json
import logging
import pickle
import time
from functools import lru_cache
from pathlib import Path
from typing import Sequence

from rlaif.assets import _locked, cache_dir, imdb_splits

log = logging.getLogger(__name__)

GOLD_VERSION = 1


class GoldSentiment:
    def __init__(self, pipeline, accuracy: float) -> None:
        self.pipeline = pipeline
        self.accuracy = accuracy

    def score(self, texts: Sequence[str]) -> list[float]:
        """P(positive) for each text."""
        if not texts:
            return []
        return [float(p) for p in self.pipeline.predict_proba(list(texts))[:, 1]]


def _train() -> tuple[object, float, dict]:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    splits = imdb_splits()
    train, test = splits["gold_train"], splits["gold_test"]
    t = time.time()
    pipe = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), min_df=2, max_features=200_000, sublinear_tf=True),
                         LogisticRegression(C=4.0, max_iter=1000))
    pipe.fit([x for x, _ in train], [y for _, y in train])
    acc = float(pipe.score([x for x, _ in test], [y for _, y in test]))
    info = {"version": GOLD_VERSION, "accuracy": acc, "train": len(train), "test": len(test),
            "seconds": round(time.time() - t, 1)}
    return pipe, acc, info


@lru_cache(maxsize=1)
def load_gold(name: str = "imdb_sentiment") -> GoldSentiment:
    if name != "imdb_sentiment":
        raise ValueError(f"unknown gold scorer {name!r} (known: imdb_sentiment)")
    path = cache_dir() / f"gold-imdb-sentiment-v{GOLD_VERSION}.pkl"
    meta = path.with_suffix(".json")
    with _locked("gold"):
        if not path.exists():
            log.info("training the gold IMDB sentiment model (TF-IDF + logistic regression, once)")
            pipe, acc, info = _train()
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(pickle.dumps(pipe))
            tmp.replace(path)
            meta.write_text(json.dumps(info, indent=2))
    info = json.loads(meta.read_text())
    log.info("gold sentiment model: held-out accuracy %.3f on %d reviews", info["accuracy"], info["test"])
    return GoldSentiment(pickle.loads(Path(path).read_bytes()), info["accuracy"])
