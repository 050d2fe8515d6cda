"""rlaif: active preference learning (RLAIF) under a label budget."""

__version__ = "0.1.0"
