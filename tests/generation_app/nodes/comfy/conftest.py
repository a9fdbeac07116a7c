"""Fixtures for the comfy_workflow tests: a real ComfyUI test peer on loopback, no Django."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.peers.comfyui_server import ComfyTestServer


@pytest.fixture(autouse=True)
def _clean_redis() -> Iterator[None]:
    """Overrides the suite-wide Redis cleaner: these tests use neither Django nor Redis."""
    yield


@pytest.fixture
def comfy() -> Iterator[ComfyTestServer]:
    with ComfyTestServer() as server:
        yield server
