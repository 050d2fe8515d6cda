"""``rlaif prepare``: build the offline assets once (SmolLM2 conversion, gold sentiment model).

Converts the packaged SmolLM2-135M-Instruct policy to a transformers directory, builds the tiny
GPT-2 the tests use, and trains (or loads) the gold IMDB sentiment model; later runs reuse them.
"""

from __future__ import annotations

import argparse
import logging


def build_parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog="rlaif prepare", description=__doc__.split("\n\n")[0],
                                   epilog=__doc__.split("\n\n", 1)[1],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def main(argv: list[str] | None = None) -> int:
    build_parser().parse_args([] if argv is None else argv)
    from rlaif.assets import smollm2_dir, tiny_dir
    from rlaif.models.gold import load_gold

    logging.basicConfig(level=logging.INFO, format="[rlaif] %(message)s")
    print(f"policy  SmolLM2-135M-Instruct -> {smollm2_dir()}")
    print(f"tests   tiny GPT-2 -> {tiny_dir()}")
    gold = load_gold("imdb_sentiment")
    print(f"gold    IMDB sentiment model, held-out accuracy {gold.accuracy:.3f}")
    return 0
