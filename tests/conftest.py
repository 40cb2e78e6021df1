"""Shared fixtures: real engine processes on real sockets (no mocks of our own server).

`spawn_engine(...)` starts `paintbridge serve` on a free port in its own data dir and returns an EngineProc
(url, token, data_dir, model_name; stop/kill/restart). `engine_server` is one engine with a tiny demo SD1.5
model shared by the whole session; tests that restart or kill the engine spawn their own. Helpers that are not
fixtures live in tests/helpers.py.

The fast lane (`pytest -m "not slow"`): a test is marked `slow` here when it uses a fixture that starts an
engine, builds demo models or runs a host app (SLOW_FIXTURES, through fixtures that depend on them too), or
carries the `host` marker; tests that load a model by other means carry `slow` themselves. An engine started
by a test that is not marked slow fails that test, so the fast lane stays fast.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from . import helpers  # noqa: E402
from .helpers import ROOT, EngineProc, cli  # noqa: E402,F401  (ROOT, cli: for imports written before helpers.py)

SLOW_FIXTURES = {"spawn_engine", "spine_server", "engine_server", "demo_models",
                 "host", "gui_host", "gimp", "gimp_plugin", "plugin_zip", "addon_zip"}   # tests/hosts/


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("host") or SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    helpers.ENGINE_ALLOWED = item.get_closest_marker("slow") is not None


@pytest.fixture
def spawn_engine(tmp_path_factory):
    procs: list[EngineProc] = []

    def spawn(*args: str, data_dir: Path | None = None) -> EngineProc:
        proc = EngineProc(data_dir or tmp_path_factory.mktemp("engine"), list(args)).start()
        procs.append(proc)
        return proc

    yield spawn
    for p in procs:
        p.kill()


@pytest.fixture(scope="module")
def spine_server(tmp_path_factory):
    """An engine without models, for protocol/auth/blob tests (one per test module)."""
    proc = EngineProc(tmp_path_factory.mktemp("spine"), []).start()
    yield proc
    proc.kill()


@pytest.fixture(scope="session")
def demo_models(tmp_path_factory) -> Path:
    """A models folder with tiny random-weight demo models (they produce noise, by design)."""
    from engine.models.demo import make_demo

    root = tmp_path_factory.mktemp("models")
    for arch in ("sd15", "sd2", "sdxl", "flux"):
        make_demo(root / "build", arch).rename(root / f"tiny-{arch}")
    make_demo(root / "build", "esrgan").rename(root / "tiny-esrgan.safetensors")   # a 2× upscaler
    make_demo(root / "build", "lora-sd15").rename(root / "tiny-lora-sd15.safetensors")
    return root


@pytest.fixture(scope="session")
def engine_server(tmp_path_factory, demo_models):
    proc = EngineProc(tmp_path_factory.mktemp("engine-shared"), ["--models", str(demo_models)])
    proc.model_name = "tiny-sd15"
    proc.start()
    yield proc
    proc.kill()
