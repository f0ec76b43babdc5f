"""A tiny random Flamingo behind real uvicorn servers on free loopback ports (one per configuration)."""

from __future__ import annotations

from contextlib import contextmanager

import pytest

pytest.importorskip("fastapi", reason="serving needs the serve extra: pip install 'flamingo-vlm[serve]'")
pytest.importorskip("uvicorn")

from serve_helpers import serving  # noqa: E402


@pytest.fixture(scope="session")
def model_and_processor(tiny_flamingo_dir):
    from flamingo_vlm import Flamingo, FlamingoProcessor

    model = Flamingo.from_pretrained(tiny_flamingo_dir).eval()
    return model, FlamingoProcessor.from_model(model)


@pytest.fixture(scope="session")
def make_server(model_and_processor):
    """``make_server(**config)`` → a context manager serving the tiny model with that ServeConfig."""
    from flamingo_vlm.serve.app import create_app
    from flamingo_vlm.serve.config import ServeConfig

    model, processor = model_and_processor

    @contextmanager
    def make(**config):
        app = create_app(model, processor, ServeConfig(model_id="tiny", **config))
        with serving(app) as url:
            yield url, app

    return make


@pytest.fixture(scope="session")
def server(make_server):
    """The default server (the default limits), shared by the tests that do not change its settings."""
    with make_server(batch_wait_ms=20) as (url, app):
        yield url, app
