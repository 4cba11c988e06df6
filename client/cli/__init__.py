"""The ``qwen-client`` command line: one module per command (``shots``, ``analyze``,
``health``, ``chat``), the options they share (``options``) and the entry point (``main``)."""

from client.cli.main import build_parser, main, run

__all__ = ["build_parser", "main", "run"]
