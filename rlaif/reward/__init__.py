"""Reward models fitted on the labels a run bought: frozen policy features + an ensemble of small heads.

``features.py`` turns completions into frozen feature vectors (hidden states of the base policy,
cached per completion); ``ensemble.py`` fits K Bradley-Terry heads on them (bootstrap resamples,
different seeds); ``fit.py`` reads runs' ledgers and is what ``rlaif fit-rm`` runs; ``online.py`` is
the per-round refit the epistemic arms (``ensemble_uncertainty``, ``thompson``) use.
"""
