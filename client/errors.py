"""The client's failures, each with the process exit code the CLI reports for it.

Every error the user can cause or meet (bad input file, unreachable server, wrong token, a
resume with other settings) is a ``ClientError``: the CLI prints its message on one line and
exits with its ``exit_code``, never with a traceback. Anything else is a bug (exit code 1).

Exit codes (also in ``qwen-client --help``):

====  =====================================================================
0     success
1     unexpected error (a bug; run with -v for the traceback)
2     usage error or bad input (missing file, not a video, no video stream,
      output directory holding a different run, unreadable token file; for
      chat, a request the server refused: unknown session, invalid results)
3     server unreachable, or every server failed
4     authentication failed (401: missing or wrong token)
5     a server rejected a request as invalid (4xx other than 401/429); for
      chat, the chat provider failed
130   interrupted (Ctrl-C); rerun the same command to resume
====  =====================================================================
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_AUTH = 4
EXIT_REJECTED = 5
EXIT_INTERRUPTED = 130


class ClientError(Exception):
    """A failure with a message meant for the user and a process exit code."""

    exit_code: int = EXIT_UNEXPECTED


class UsageError(ClientError):
    """The command line or the environment is wrong (e.g. an unreadable token file)."""

    exit_code = EXIT_USAGE


class InputError(ClientError):
    """The input file cannot be used."""

    exit_code = EXIT_USAGE


class FilmNotFound(InputError):
    """The film path does not exist or is not a file."""


class VideoOpenFailure(InputError):
    """The file exists but FFmpeg cannot open it as a media container (not a video?)."""


class NoVideoStream(InputError):
    """The container has no video stream (audio-only file, or only cover art)."""


class NoFramesDecoded(InputError):
    """The video stream exists but not one frame could be decoded."""


class OutputConflict(ClientError):
    """The output directory holds another run (other film or settings); --force restarts."""

    exit_code = EXIT_USAGE


class ServerUnreachable(ClientError):
    """No server could be reached, or every server left the rotation after failing."""

    exit_code = EXIT_UNREACHABLE


class AuthFailed(ClientError):
    """A server answered 401: the token is missing or wrong. Stops the run at once."""

    exit_code = EXIT_AUTH


class RequestRejected(ClientError):
    """A server refused a request as invalid (400/413/422...): retrying cannot help."""

    exit_code = EXIT_REJECTED


class ChatFailed(ClientError):
    """``qwen-client chat`` got no complete answer: the chat provider (or the server) failed,
    timed out, or sent a malformed reply or stream."""

    exit_code = EXIT_REJECTED


class ServerProtocolError(ClientError):
    """A server answered 200 with a body that does not follow the contract."""

    exit_code = EXIT_UNEXPECTED


class Interrupted(ClientError):
    """The run was stopped by the user (Ctrl-C)."""

    exit_code = EXIT_INTERRUPTED
