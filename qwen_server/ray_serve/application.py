"""The Serve application from the settings: engine deployment options resolved on the cluster.

``build_application(settings)`` needs a connected Ray (``ray.init``) because "auto" settings are
resolved against the cluster's resources: ``gpus_per_replica: auto`` is 1 on a cluster with GPUs
and 0 (CPU replicas) on one without; ``max_replicas: auto`` is one replica per GPU there.

``app_builder`` is the same for ``serve run`` / a Serve config file (KubeRay's RayService):
``serve run qwen_server.ray_serve.application:app_builder config=config.yaml``.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import ray
from ray import serve
from ray.serve import Application

from ..config import Settings, load_settings
from .engine_deployment import EngineReplica, engine_deployment_options
from .ingress import Ingress

logger = logging.getLogger("qwen_server.ray_serve")


def resolve_replicas(settings: Settings, cluster_gpus: float) -> tuple[float, int]:
    """GPUs per engine replica and the autoscaling ceiling, for a cluster with ``cluster_gpus``.

    A CPU-only cluster gets CPU replicas (0 GPUs) up to ``max_replicas`` (min_replicas when
    "auto"); with GPUs, "auto" is one replica per ``gpus_per_replica`` GPUs of the cluster."""
    cfg = settings.ray
    if cfg.gpus_per_replica == "auto":
        gpus = 1.0 if cluster_gpus >= 1 else 0.0
    else:
        gpus = float(cfg.gpus_per_replica)
    if isinstance(cfg.max_replicas, int):
        ceiling = cfg.max_replicas
    elif gpus > 0:
        ceiling = max(cfg.min_replicas, math.floor(cluster_gpus / gpus + 1e-9))
    else:
        ceiling = cfg.min_replicas
    return gpus, ceiling


def build_application(settings: Settings) -> Application:
    """The bound Serve application: the ingress over the engine deployment."""
    cluster_gpus = float(ray.cluster_resources().get("GPU", 0))
    gpus, ceiling = resolve_replicas(settings, cluster_gpus)
    engine_options = engine_deployment_options(settings, gpus, ceiling)
    logger.info(
        "engine deployment: %s GPU(s) and %s CPU(s) per replica, %d to %d replicas "
        "(cluster: %g GPUs), max_ongoing_requests %d",
        gpus,
        settings.ray.cpus_per_replica,
        settings.ray.min_replicas,
        ceiling,
        cluster_gpus,
        engine_options["max_ongoing_requests"],
    )
    engine = serve.deployment(**engine_options)(EngineReplica).bind(settings)
    ingress = serve.deployment(
        name="Ingress",
        num_replicas=settings.ray.ingress_replicas,
        max_ongoing_requests=settings.ray.ingress_max_ongoing_requests,
        ray_actor_options={"num_cpus": 0},
        # The ingress drains like the single box: requests in flight finish.
        graceful_shutdown_timeout_s=settings.server.shutdown_timeout_s,
    )(Ingress)
    return ingress.bind(settings, engine)


def app_builder(args: dict[str, Any]) -> Application:
    """``serve run qwen_server.ray_serve.application:app_builder [config=path.yaml]``.

    Reads the settings like ``qwen-server`` (config file, then ``QWEN_*`` environment); runs in
    the ``serve run`` process, which is connected to the cluster."""
    settings = load_settings(args.get("config"))
    return build_application(settings)
