"""Experiment trackers (``logger=none|tensorboard|mlflow|wandb|trackio``) and progress display.

:mod:`rlaif.logger.base` holds the :class:`~rlaif.logger.base.Logger` interface and what a round
logs; one module per tracker; :mod:`rlaif.logger.progress` the progress bars (a TTY) or periodic
log lines (anything else) of labelling, evaluation, the benchmark and DPO training.
"""
