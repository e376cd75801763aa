"""The service while MLflow is unreachable: it starts (unready) instead of failing, and keeps trying."""

import threading

from scalping_assets.settings import Settings
from scalping_assets.testing.server_process import free_port
from serving.models import CHAMPION, ModelSet


def test_the_service_starts_unready_while_the_registry_is_unreachable(monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # refused at once, not after MLflow's backoff
    nobody = f"http://127.0.0.1:{free_port()}"
    models = ModelSet(Settings(tracking_uri=nobody, data_dir=tmp_path, follow_interval_s=0))
    assert not models.ready and models.loaded == {}
    assert models.problems[CHAMPION].startswith("registry unreachable: "), models.problems
    # The follower looks again, and keeps what it has while the registry is still away.
    stop = threading.Event()
    follower = threading.Thread(target=models.follow_registry, args=(0.05, stop))
    follower.start()
    stop.wait(0.5)
    stop.set()
    follower.join(10)
    assert not follower.is_alive() and not models.ready
