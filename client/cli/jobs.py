"""``qwen-client jobs``: list a server's film jobs, show one, cancel one, or follow one to its
end and fetch its results (what ``submit`` does after its upload; the way back after Ctrl-C)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from client.cli.options import add_command, add_server_options, add_verbosity_options, server_url
from client.credentials import TOKEN_ENV, read_token
from client.errors import EXIT_INTERRUPTED, EXIT_OK, UsageError

ACTIONS = ("list", "show", "cancel", "follow")

EXITS = """\
exit codes:
  0    success (follow: the job is done and its results are in DIR)
  2    usage error (a missing job id, DIR holding other files)
  3    server unreachable; follow: the job failed or was cancelled
  4    authentication failed (401: missing or wrong token)
  5    the server refused: unknown job (404), cancel of a finished job (409)
  130  interrupted (Ctrl-C): a followed job keeps running
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``jobs``."""
    p = add_command(
        sub,
        "jobs",
        summary="list, show, cancel or follow a server's film jobs",
        description=(
            "ACTION is list (the default: newest first), show ID (a job's status), cancel ID\n"
            "(stop a queued or running job; the shots already analysed stay in its session),\n"
            "or follow ID (show its progress to the end, then download its results into DIR,\n"
            "as submit does).\n"
            f"The token comes from ${TOKEN_ENV} or --token-file."
        ),
        examples=[
            "qwen-client jobs --server http://gpu1:8000",
            "qwen-client jobs show 3f2a9c1d0b7e --server http://gpu1:8000 --json",
            "qwen-client jobs cancel 3f2a9c1d0b7e -s http://gpu1:8000",
            "qwen-client jobs follow 3f2a9c1d0b7e -s http://gpu1:8000 --out film_analysis",
        ],
        exits=EXITS,
    )
    p.add_argument("action", nargs="?", choices=ACTIONS, default="list", help="what to do")
    p.add_argument("job_id", nargs="?", metavar="ID", help="the job (show, cancel, follow)")
    add_server_options(p, repeatable=False, help="analysis server base URL")
    p.add_argument("--json", action="store_true", help="print the server's JSON answer")
    p.add_argument("--limit", type=int, default=20, metavar="N", help="list: jobs per page")
    p.add_argument("--offset", type=int, default=0, metavar="N", help="list: jobs to skip")
    p.add_argument(
        "--out",
        "-o",
        type=Path,
        metavar="DIR",
        help="follow: where the results go (default: job-ID)",
    )
    p.add_argument("--force", action="store_true", help="follow: replace DIR when it holds files")
    p.add_argument(
        "--no-exports",
        action="store_true",
        help="follow: do not write DIR/report.html and DIR/timeline.otio",
    )
    add_verbosity_options(p)
    p.set_defaults(handler=run)


def _table(page: dict[str, Any]) -> str:
    """The job list as aligned columns, then how many there are."""
    from client.cli.job_follow import status_line

    rows = [f"{'job':<16} {'created':<20} {'source':<28} status"]
    for job in page.get("jobs", []):
        source = job.get("source") or {}
        name = f"{source.get('kind', '?')}:{source.get('name', '?')}"
        created = str(job.get("created_at") or "")[:19]
        rows.append(f"{job['job_id']:<16} {created:<20} {name[:28]:<28} {status_line(job)}")
    shown = len(page.get("jobs", []))
    offset = page.get("offset", 0)
    rows.append(f"{shown} of {page.get('total')} jobs (from {offset + 1 if shown else offset})")
    return "\n".join(rows)


def _show(status: dict[str, Any]) -> str:
    from client.cli.job_follow import status_line

    keys = ("session_id", "title", "created_at", "started_at", "finished_at", "error")
    lines = [f"job {status['job_id']}: {status_line(status)}"]
    source = status.get("source") or {}
    lines.append(f"  source: {source.get('kind')} {source.get('name')}")
    lines += [f"  {key}: {status.get(key)}" for key in keys if status.get(key) is not None]
    lines.append("  options: " + json.dumps(status.get("options", {}), sort_keys=True))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Handler of ``qwen-client jobs``."""
    import sys

    from client.api.jobs import JobsClient
    from client.cli.job_follow import follow_and_fetch, interrupted_message
    from client.cli.submit import check_out

    url = server_url(args.server)
    if args.action != "list" and not args.job_id:
        raise UsageError(f"jobs {args.action} needs a job id")
    token = read_token(args.token_file)
    with JobsClient(url, token) as client:
        if args.action == "list":
            page = client.page(args.limit, args.offset)
            print(json.dumps(page, indent=2) if args.json else _table(page))
        elif args.action == "show":
            status = client.status(args.job_id)
            print(json.dumps(status, indent=2) if args.json else _show(status))
        elif args.action == "cancel":
            status = client.cancel(args.job_id)
            print(json.dumps(status, indent=2) if args.json else _show(status))
        else:
            out = args.out or Path(f"job-{args.job_id}")
            check_out(out, args.force)
            try:
                follow_and_fetch(
                    client, args.job_id, out, quiet=args.quiet, exports=not args.no_exports
                )
            except KeyboardInterrupt:
                print(interrupted_message(args.job_id, url, out), file=sys.stderr)
                return EXIT_INTERRUPTED
    return EXIT_OK
