"""``qwen-server`` / ``python -m qwen_server``: run the analysis server.

Settings come from config.yaml, then ``QWEN_*`` environment variables, then these flags.
SIGTERM/SIGINT drain gracefully: new requests get 503 and ``/health`` answers 503 "draining",
requests in flight finish (up to ``server.shutdown_timeout_s``), then the process exits 0. A
second signal ends the process at once, killed by that signal (exit status 143 for SIGTERM,
130 for SIGINT), abandoning requests in flight (``qwen_server.http.serving.DrainingServer``).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from pathlib import Path
from typing import Any

from . import __version__
from .errors import ConfigError

logger = logging.getLogger("qwen_server")

EXAMPLES = """examples:
  QWEN_SERVER_API_KEYS=$(cat ~/.config/qwen-server/api_key) qwen-server
  qwen-server --model Qwen/Qwen2-VL-7B-Instruct --placement replicate --port 8080
  qwen-server --model ./models/tiny-qwen2-vl --insecure-no-auth     # local development only
  qwen-server --ray        # the same app on a Ray Serve cluster (config.yaml's ray: section)
"""


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="qwen-server",
        description="Qwen2-VL shot analysis server (FastAPI, bearer-key auth).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", help="YAML settings file (default: $QWEN_CONFIG or ./config.yaml)")
    p.add_argument("--host", help="bind address (server.host)")
    p.add_argument("--port", type=int, help="port (server.port)")
    p.add_argument("--model", help="hub id or local checkpoint directory (model.name / model.path)")
    p.add_argument("--placement", choices=["auto", "shard", "replicate"], help="model.placement")
    p.add_argument(
        "--dtype", choices=["auto", "bfloat16", "float16", "float32"], help="model.dtype"
    )
    p.add_argument("--device", choices=["auto", "cuda", "cpu"], help="model.device")
    # No type=int: "auto" is a value too; the settings check the number and name the key.
    p.add_argument(
        "--max-batch-size", help="shots per generate, or 'auto' (batching.max_batch_size)"
    )
    p.add_argument("--api-key-file", help="file with one API key per line (server.api_key_file)")
    p.add_argument("--store", help="SQLite file for film sessions (store.path)")
    p.add_argument(
        "--attributes-file",
        help="YAML attribute vocabulary every shot is scored on (analysis.attributes_file)",
    )
    p.add_argument(
        "--insecure-no-auth",
        action="store_true",
        default=None,
        help="serve without API keys (development only; logs a loud warning)",
    )
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.add_argument(
        "--ray",
        action="store_true",
        help="serve on a Ray Serve cluster: engine replicas per GPU, autoscaled (ray.* settings; "
        "needs the ray extra)",
    )
    p.add_argument(
        "--check-config",
        action="store_true",
        help="validate the settings (and API keys), print 'HOST PORT' and exit without serving",
    )
    p.add_argument("--version", action="version", version=f"qwen-server {__version__}")
    return p.parse_args(argv)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, dict[str, Any]] = {}

    def put(section: str, key: str, value: Any) -> None:
        if value is not None:
            out.setdefault(section, {})[key] = value

    put("server", "host", args.host)
    put("server", "port", args.port)
    put("server", "api_key_file", args.api_key_file)
    put("server", "insecure_no_auth", args.insecure_no_auth)
    put("server", "log_level", args.log_level)
    put("store", "path", args.store)
    put("analysis", "attributes_file", args.attributes_file)
    if args.model is not None:
        # A directory on disk (or anything spelled like a path) is a local checkpoint; anything
        # else is a hub id, which also clears a model.path set in config.yaml.
        local = Path(args.model).expanduser()
        if local.is_dir() or args.model.startswith(("/", ".", "~")):
            put("model", "path", str(local))
        else:
            put("model", "name", args.model)
            out["model"]["path"] = None
    put("model", "placement", args.placement)
    put("model", "dtype", args.dtype)
    put("model", "device", args.device)
    put("batching", "max_batch_size", args.max_batch_size)
    return out


def configure_logging(level: str) -> None:
    """Entry-point logging: one stream handler, timestamps, our loggers at ``level``."""
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # Third-party chatter stays at warning unless debugging.
    if level != "debug":
        for name in ("httpx", "httpcore", "urllib3", "filelock", "uvicorn.access"):
            logging.getLogger(name).setLevel(logging.WARNING)


# What ``pip install ".[server]"`` adds to the client-only install; checked before anything
# imports them so a client box gets one clear line instead of a traceback.
_SERVER_STACK = ("pydantic", "pydantic_settings", "fastapi", "uvicorn", "torch", "transformers")


def _missing_server_stack() -> list[str]:
    import importlib.util

    return [name for name in _SERVER_STACK if importlib.util.find_spec(name) is None]


def _error(message: str) -> int:
    print(f"qwen-server: error: {message}", file=sys.stderr)
    return 2


def _check_config(settings: Any) -> int:
    """``--check-config``: the settings, the API keys and the open-file room, then 'HOST PORT'."""
    if not settings.api_keys() and not settings.server.insecure_no_auth:
        return _error(
            "no API key configured: set QWEN_SERVER_API_KEYS or "
            "server.api_key_file (or --insecure-no-auth for local development only)"
        )
    from .http.serving import ensure_fd_room

    try:
        ensure_fd_room(settings.server.max_connections)
    except ConfigError as exc:
        return _error(exc.message)
    print(settings.server.host, settings.server.port)
    return 0


def _serve(settings: Any) -> int:
    """Build the app and run uvicorn until signalled (first signal drains, second kills)."""
    import uvicorn

    from .http.app import create_app
    from .http.serving import DrainingServer, uvicorn_config

    exit_code = {"value": 0}
    server_box: dict[str, uvicorn.Server] = {}

    def on_fatal(message: str) -> None:
        logger.error("exiting: %s", message)
        exit_code["value"] = 1
        if "server" in server_box:
            server_box["server"].should_exit = True

    try:
        app = create_app(settings, on_fatal=on_fatal)
        config = uvicorn_config(app, settings)
    except ConfigError as exc:
        return _error(exc.message)

    server = DrainingServer(
        config, run=app.state.run, drain_timeout_s=settings.server.shutdown_timeout_s
    )
    server_box["server"] = server
    logger.info(
        "qwen-server %s starting on %s:%d", __version__, settings.server.host, settings.server.port
    )
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    if not server.started and exit_code["value"] == 0:
        return 1  # e.g. the port was taken; uvicorn already logged why
    return exit_code["value"]


def main(argv: list[str] | None = None) -> int:
    """Run the server until signalled; return the process exit code."""
    args = _parse_args(argv)
    missing = _missing_server_stack()
    if missing:
        return _error(
            f"the server's dependencies are not installed ({', '.join(missing)}): this looks "
            "like a client-only install; on a GPU box run `bash scripts/setup.sh` or "
            '`pip install ".[server]"`'
        )
    from .config import load_settings

    try:
        settings = load_settings(args.config, **_overrides(args))
    except ConfigError as exc:
        return _error(exc.message)
    if args.check_config:
        return _check_config(settings)
    configure_logging(settings.server.log_level)
    if args.ray:
        return _serve_on_ray(settings)
    return _serve(settings)


def _serve_on_ray(settings: Any) -> int:
    """``--ray``: the app as a Ray Serve application (qwen_server/ray_serve/cluster.py)."""
    import importlib.util

    if importlib.util.find_spec("ray") is None or importlib.util.find_spec("ray.serve") is None:
        return _error('--ray needs Ray Serve: pip install ".[ray]"')
    if not settings.api_keys() and not settings.server.insecure_no_auth:
        return _error(
            "no API key configured: set QWEN_SERVER_API_KEYS or "
            "server.api_key_file (or --insecure-no-auth for local development only)"
        )
    from .ray_serve.cluster import run_cluster

    return run_cluster(settings)


if __name__ == "__main__":
    sys.exit(main())
