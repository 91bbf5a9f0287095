"""medjax: a JAX/Flax framework for training medical large language models."""

__version__ = "0.1.0"
