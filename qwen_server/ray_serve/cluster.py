"""``qwen-server --ray``: join or start a Ray cluster, deploy the Serve application, serve.

One command, the same config.yaml: ``ray.address`` says which cluster (none: a local one in
this process), ``server.host:server.port`` is where Serve's HTTP proxy listens (on every node
of the cluster). The process stays in the foreground like the single-box server: the first
SIGTERM/SIGINT deletes the application, which drains it (each replica finishes its requests
within its graceful_shutdown_timeout_s), then disconnects (and stops a local cluster); a
second signal ends the process at once.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

import ray
from ray import serve

from ..config import Settings
from .application import build_application

logger = logging.getLogger("qwen_server.ray_serve")


def connect(settings: Settings) -> None:
    """``ray.init`` for ``ray.address``: a local cluster sized by the ``ray`` settings when it
    is None, else the named cluster ("auto", "ray://head:10001", "host:6379")."""
    cfg = settings.ray
    if ray.is_initialized():
        return
    if cfg.address is None:
        ray.init(
            namespace=cfg.namespace,
            num_cpus=cfg.num_cpus,
            include_dashboard=cfg.include_dashboard,
            object_store_memory=cfg.object_store_mb * 1_048_576,
            log_to_driver=False,  # replicas log to the cluster's session folder
            # Ray starts its workers at nice 15 (meant for background tasks); here the workers
            # ARE the server. At 15, the engine replica on a busy 2-core machine generated 3-4x
            # slower than the plain server (scripts/bench_ray.py). `ray start` clusters: export
            # RAY_worker_niceness=0 before `ray start` (README).
            _system_config={"worker_niceness": 0},
        )
    else:
        ray.init(address=cfg.address, namespace=cfg.namespace, log_to_driver=False)


def deploy(settings: Settings) -> str:
    """Start Serve's proxy on server.host:server.port (if Serve is not running yet), deploy the
    application and wait until its replicas are up; return the URL. Raises RuntimeError when
    the deployment fails (e.g. the checkpoint cannot be loaded on a replica)."""
    host, port = settings.server.host, settings.server.port
    serve.start(http_options={"host": host, "port": port})
    serve.run(
        build_application(settings),
        name=settings.ray.app_name,
        route_prefix="/",
        blocking=False,
    )
    url = f"http://{host}:{port}"
    logger.info("Serve application %r ready at %s", settings.ray.app_name, url)
    return url


def undeploy(settings: Settings) -> None:
    """Delete the application (drains its replicas), then disconnect; a local cluster stops."""
    try:
        serve.delete(settings.ray.app_name)
        if settings.ray.address is None:
            serve.shutdown()
    finally:
        ray.shutdown()


def run_cluster(settings: Settings) -> int:
    """The ``--ray`` command: deploy, serve until signalled, drain; the process exit code."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        logger.info("signal %d: draining the Serve application (again to quit at once)", signum)
        stop.set()
        signal.signal(signum, signal.SIG_DFL)

    try:
        connect(settings)
        # After ray.init (which sets its own SIGTERM handler), before the deploy: a signal during
        # start-up drains as soon as the application is up.
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, on_signal)
        deploy(settings)
    except RuntimeError as exc:
        logger.error("the Serve application did not start: %s", exc)
        if ray.is_initialized():
            undeploy(settings)
        return 1
    stop.wait()
    undeploy(settings)
    logger.info("Serve application %r stopped", settings.ray.app_name)
    return 0
