"""Moderation fixtures: the default categories and policies (transactional tests empty the tables migrations fill)."""

from __future__ import annotations

import importlib

import pytest
from django.apps import apps


@pytest.fixture(autouse=True)
def default_categories(db: None) -> None:
    importlib.import_module("apps.moderation.migrations.0002_default_categories").create(apps, None)
