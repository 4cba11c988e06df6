"""``qwen-client trailer``: a first rough trailer cut of an analysed film, from its scores.

Reads a results folder (``qwen-client analyze --out DIR``), scores every shot with a genre
profile, picks, trims and orders clips into a cut of the requested length (the rules:
``client.trailer.selection`` and ``client.trailer.arc``) and writes it as a timeline an editor
opens (.otio, .edl, .fcpxml) plus ``cut.json`` beside it explaining every pick.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from client.cli.options import add_command, add_verbosity_options
from client.errors import EXIT_OK, UsageError

log = logging.getLogger("client.cli")

TIMELINE_SUFFIXES = (".otio", ".edl", ".fcpxml")
EXITS = """\
exit codes:
  0    success (warnings on stderr: attributes the results lack, a film too short
       for --duration)
  1    unexpected error (a bug; rerun with -v for the traceback)
  2    usage error or bad input: not a results folder, no scores in it, unknown or
       invalid profile, none of the profile's attributes in the results, a bad
       --duration/--min-clip/--max-clip, --out not .otio/.edl/.fcpxml
"""


def _seconds(text: str) -> float:
    """An argparse type: seconds as a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, not {text!r}")
    return value


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``trailer``."""
    from client.trailer.profiles import shipped_names

    p = add_command(
        sub,
        "trailer",
        summary="a rough trailer cut (OTIO/EDL/FCP XML + cut.json) from analysed shots",
        description=(
            "Cut a first rough trailer from RESULTS_DIR (written by 'qwen-client analyze'):\n"
            "score each shot with a genre profile (weights over attributes), pick the best\n"
            "shots spread over the film (never two neighbours unless --allow-adjacent), trim\n"
            "each around its middle sampled frame to --min-clip..--max-clip seconds, order them\n"
            "into a calm opening, a rising build and a peak at the end, and fit the total to\n"
            "--duration within one frame. Writes --out (.otio, .edl or .fcpxml, referencing the\n"
            "film) and cut.json beside it, explaining every pick and the arc."
        ),
        examples=[
            "qwen-client trailer out --profile thriller --duration 30 --out out/cut.otio",
            "qwen-client trailer out --profile action --duration 60 --max-clip 2 --out cut.edl",
            "qwen-client trailer out --profile examples/trailer_attributes.yaml:comedy "
            "--duration 45 --out cut.fcpxml",
        ],
        exits=EXITS,
    )
    p.add_argument(
        "results", type=Path, metavar="RESULTS_DIR", help="results folder of 'qwen-client analyze'"
    )
    p.add_argument(
        "--profile",
        required=True,
        metavar="NAME|FILE[:NAME]",
        help=(
            f"genre profile: a shipped one ({', '.join(shipped_names())}), a YAML FILE holding "
            "one profile, or FILE:NAME (e.g. examples/trailer_attributes.yaml:thriller)"
        ),
    )
    p.add_argument(
        "--duration", required=True, type=_seconds, metavar="SECONDS", help="length of the cut"
    )
    p.add_argument(
        "--out",
        "-o",
        required=True,
        type=Path,
        metavar="FILE",
        help="timeline to write: .otio, .edl or .fcpxml (cut.json is written beside it)",
    )
    p.add_argument(
        "--min-clip", type=_seconds, default=1.0, metavar="SECONDS", help="shortest clip"
    )
    p.add_argument(
        "--max-clip",
        type=_seconds,
        default=4.0,
        metavar="SECONDS",
        help="longest clip (a longer shot is trimmed around its middle sampled frame)",
    )
    p.add_argument(
        "--allow-adjacent",
        action="store_true",
        help="allow picks from neighbouring shots (by default never two in a row of the film)",
    )
    add_verbosity_options(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Handler of ``qwen-client trailer``."""
    from client.export.results import load_results
    from client.trailer import arc
    from client.trailer.cut import cut_document, write_cut
    from client.trailer.profiles import load_profile, resolve
    from client.trailer.selection import CutSettings, Shot, select

    out: Path = args.out
    if out.suffix.lower() not in TIMELINE_SUFFIXES:
        raise UsageError(
            f"--out {out}: the timeline must end with {', '.join(TIMELINE_SUFFIXES)} "
            "(its format follows the name)"
        )
    if out.is_dir():
        raise UsageError(f"--out {out} is a directory; give a file name such as {out}/cut.otio")
    try:
        settings = CutSettings(
            duration=args.duration,
            min_clip=args.min_clip,
            max_clip=args.max_clip,
            allow_adjacent=args.allow_adjacent,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    profile = load_profile(args.profile)
    results = load_results(args.results)
    if not results.analysed or not results.vocabulary:
        raise UsageError(
            f"{args.results} holds no scores (a 'qwen-client shots' folder?): run "
            "'qwen-client analyze' first"
        )
    weighting = resolve(profile, results.vocabulary)
    shots = [Shot.from_record(s.raw) for s in results.shots]
    try:
        selection = select(shots, weighting.weights, settings, results.film.fps)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    warnings = list(selection.warnings)
    if weighting.missing:
        warnings.insert(
            0,
            f"the results lack {', '.join(weighting.missing)} "
            f"({100 * weighting.missing_share:.0f}% of profile {profile.name}'s weight)",
        )
    if results.film.path is None:
        warnings.append(
            f"the results do not record where {results.film.name} is: the timeline names the "
            "media by file name only (relink it in the editor)"
        )
    for line in warnings[1 if weighting.missing else 0 :]:
        log.warning("%s", line)
    placed = arc.arrange(selection.clips)
    document = cut_document(
        selection, placed, weighting, settings, results.film, out.name, warnings
    )
    cut_json = write_cut(out, document, placed, results.film)
    _refresh_report(results.directory, cut_json)
    if not args.quiet:
        print(_table(document))
    achieved = document["achieved"]
    print(
        f"{results.film.name}: {achieved['clips']} clips, {achieved['seconds']:.3f} s "
        f"(asked {args.duration:g} s), profile {profile.name} -> {out} and {cut_json}"
    )
    return EXIT_OK


def _refresh_report(results_dir: Path, cut_json: Path) -> None:
    """Rewrite ``results_dir/report.html`` so it shows the new cut, when the cut.json landed in
    the results folder (the report reads it from there) and a report is there already; skipped
    quietly otherwise. A failure is a warning: the cut itself is written and complete."""
    from client.errors import ClientError
    from client.export.report import REPORT, write_report

    report = results_dir / REPORT
    if cut_json.parent.resolve() != results_dir.resolve() or not report.exists():
        return
    try:
        write_report(results_dir)
    except (ClientError, OSError) as exc:
        log.warning(
            "the cut is written, but %s could not be refreshed to show it (%s); run "
            "'qwen-client export %s --format html' to retry",
            report,
            exc,
            results_dir,
        )
    else:
        log.info("%s refreshed to show the cut", report)


def _table(document: dict) -> str:
    """The clips in cut order, one line each."""
    lines = ["  #  act      shot  source in    source out   secs   score"]
    for c in document["clips"]:
        lines.append(
            f"{c['position']:>3}  {c['act']:<7} {c['shot_id']:>5}  {c['source_in_timecode']}  "
            f"{c['source_out_timecode']}  {c['seconds']:>5.2f}  {c['score']:.3f}"
        )
    return "\n".join(lines)
