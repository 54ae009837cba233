"""Fixtures shared by the ML core's tests."""

from __future__ import annotations

import socket
from typing import Any

import pytest


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """No hub, and any attempt to open an internet socket fails the test."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    connect = socket.socket.connect

    def refuse(self: socket.socket, address: Any) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise AssertionError(f"a model tried to reach the network: {address}")
        connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", refuse)
