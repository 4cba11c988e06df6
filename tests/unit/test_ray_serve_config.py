"""The Ray Serve deployment's settings and wiring: replica resources per cluster, Serve options
from the ``ray`` section, errors carried between replicas, the health check on engine failure."""

from __future__ import annotations

from pathlib import Path

import pytest

from qwen_server.config import load_settings
from qwen_server.errors import ConfigError, EngineFailure, NotReady, Overloaded

pytest.importorskip("ray.serve", reason="the ray extra is not installed")

from qwen_server.ray_serve.application import resolve_replicas  # noqa: E402
from qwen_server.ray_serve.engine_deployment import (  # noqa: E402
    EngineReplica,
    engine_deployment_options,
)
from qwen_server.ray_serve.wire import ErrorReply  # noqa: E402

CONFIG = Path(__file__).resolve().parents[2] / "config.yaml"


def _settings(**sections):
    return load_settings(CONFIG, **sections)


def test_max_ongoing_requests_below_the_batch_size_is_refused_naming_both_keys() -> None:
    with pytest.raises(ConfigError) as err:
        _settings(ray={"max_ongoing_requests": 8}, batching={"max_batch_size": 32})
    assert "ray.max_ongoing_requests" in err.value.message
    assert "batching.max_batch_size" in err.value.message
    with pytest.raises(ConfigError, match="ray.max_replicas"):
        _settings(ray={"min_replicas": 4, "max_replicas": 2})


def test_max_ongoing_requests_auto_lets_a_batch_fill() -> None:
    settings = _settings(batching={"max_batch_size": 64})
    assert settings.ray.replica_max_ongoing(64) == 64
    # A large autoscaling target raises it: twice the target, so the autoscaler sees queueing.
    settings = _settings(ray={"target_ongoing_requests": 40}, batching={"max_batch_size": 16})
    assert settings.ray.replica_max_ongoing(16) == 80


def test_replicas_follow_the_cluster_gpus() -> None:
    settings = _settings()
    assert resolve_replicas(settings, cluster_gpus=0) == (0.0, 1)  # CPU replicas, min_replicas
    assert resolve_replicas(settings, cluster_gpus=16) == (1.0, 16)  # 2 boxes x 8 GPUs
    two_each = _settings(ray={"gpus_per_replica": 2})
    assert resolve_replicas(two_each, cluster_gpus=16) == (2.0, 8)
    fixed = _settings(ray={"max_replicas": 3, "min_replicas": 2})
    assert resolve_replicas(fixed, cluster_gpus=16) == (1.0, 3)


def test_engine_deployment_options_from_the_settings() -> None:
    settings = _settings(
        ray={"min_replicas": 2, "graceful_shutdown_timeout_s": 45, "cpus_per_replica": 4},
        batching={"max_batch_size": 48},
    )
    options = engine_deployment_options(settings, gpus=1.0, max_replicas=8)
    assert options["ray_actor_options"] == {"num_gpus": 1.0, "num_cpus": 4.0}
    assert options["max_ongoing_requests"] >= 48
    scaling = options["autoscaling_config"]
    assert (scaling["min_replicas"], scaling["max_replicas"], scaling["initial_replicas"]) == (
        2,
        8,
        2,
    )
    assert scaling["target_ongoing_requests"] == settings.ray.target_ongoing_requests
    assert options["graceful_shutdown_timeout_s"] == 45
    # The options are ones Serve accepts.
    from ray import serve

    serve.deployment(**options)(EngineReplica)


def test_domain_errors_cross_replicas_with_status_and_retry_after() -> None:
    sent = Overloaded("the analysis queue is full", retry_after_s=7)
    got = ErrorReply.of(sent, replica_down=False).error()
    assert type(got) is Overloaded and got.status_code == 503
    assert got.message == sent.message and got.headers == {"Retry-After": "7"}
    assert type(ErrorReply.of(NotReady("draining"), replica_down=True).error()) is NotReady
    assert type(ErrorReply.of(EngineFailure("boom"), replica_down=False).error()) is EngineFailure


def test_health_check_fails_once_the_engine_failed(tmp_path: Path) -> None:
    from qwen_server.engine.lifecycle import Engine

    replica = EngineReplica.__new__(EngineReplica)  # Serve calls __init__ on a replica only
    replica._engine = Engine(_settings(store={"path": str(tmp_path / "s.db")}))
    replica.check_health()  # not failed: healthy
    replica._engine.failed = "CUDA error: an illegal memory access was encountered"
    with pytest.raises(RuntimeError, match="engine failed"):
        replica.check_health()
