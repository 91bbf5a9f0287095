"""Benchmark evaluation equal to lm-evaluation-harness: tasks, scoring, metrics.

``tasks`` (lm-eval's task definitions and the public datasets' layouts), ``score``
(requests and log-likelihoods), ``run`` (metrics, groups, sample logs). The command is
``python -m medjax.evaluate``."""
