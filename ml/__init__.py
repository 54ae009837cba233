"""The framework-free ML core. Never imports Django, DRF or Celery (tests/ml/test_boundaries.py checks)."""

from ml.loader import load

__all__ = ["load"]
