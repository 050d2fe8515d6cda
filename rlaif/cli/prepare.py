"""``rlaif prepare``: build the offline assets once (SmolLM2 conversion, gold sentiment model)."""

from __future__ import annotations

import logging


def main(argv: list[str] | None = None) -> int:
    from rlaif.assets import smollm2_dir, tiny_dir
    from rlaif.models.gold import load_gold

    logging.basicConfig(level=logging.INFO, format="[rlaif] %(message)s")
    print(f"policy  SmolLM2-135M-Instruct -> {smollm2_dir()}")
    print(f"tests   tiny GPT-2 -> {tiny_dir()}")
    gold = load_gold("imdb_sentiment")
    print(f"gold    IMDB sentiment model, held-out accuracy {gold.accuracy:.3f}")
    return 0
