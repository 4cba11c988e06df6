"""What ``shots`` and ``analyze`` print when a run ends: the per-shot table and the one-line
summary of the run."""

from __future__ import annotations

from typing import Any

# How the shot begins, in the table: a cut is the common case and left blank.
_KIND_SHORT = {"dissolve": "diss", "fade_in": "fade", "fade_out": "fade", "cut": ""}


def _kind(value: Any) -> str:
    """Short name of a ``transition_in`` record ('' for a cut or none)."""
    kind = value.get("kind") if isinstance(value, dict) else None
    return _KIND_SHORT.get(kind, str(kind)) if kind else ""


def shots_table(records: list[dict[str, Any]]) -> str:
    """The per-shot table printed after a run: timing, how the shot begins (``diss``olve,
    ``fade``; blank for a cut), sample frames, speech share, loudness (LUFS), tempo and the
    number of beats ('-' where not measured)."""
    lines = [
        f"{'shot':>5}  {'start':<12} {'end':<12} {'frames':>6} {'dur s':>7} {'in':<4}  "
        f"{'samples':<24} {'speech':>6} {'LUFS':>6} {'tempo':>5} {'beats':>5}"
    ]
    for r in records:
        f = r.get("audio_features") or {}
        speech = f"{f['speech_ratio']:.0%}" if f.get("speech_ratio") is not None else "-"
        lufs = f"{f['loudness_lufs']:.1f}" if f.get("loudness_lufs") is not None else "-"
        tempo = f"{f['tempo']:.0f}" if f.get("tempo") else "-"
        beats = str(len(f["beat_times"])) if isinstance(f.get("beat_times"), list) else "-"
        samples = ",".join(str(s) for s in r["sample_frames"])
        lines.append(
            f"{r['shot_id']:>5}  {r['start_timecode']:<12} {r['end_timecode']:<12} "
            f"{r['frame_count']:>6} {r['duration']:>7.2f} {_kind(r.get('transition_in')):<4}  "
            f"{samples:<24} {speech:>6} {lufs:>6} {tempo:>5} {beats:>5}"
        )
    return "\n".join(lines)


def report_line(report: Any, verb: str) -> str:
    """The one-line summary of a run (``shots`` and ``analyze``)."""
    if report.already_complete:
        return f"{report.film}: already complete, {report.shots} shots in {report.out}"
    resumed = f" ({report.resumed} from an earlier run)" if report.resumed else ""
    corrupt = (
        f", {report.corrupt_packets} corrupt packets skipped" if report.corrupt_packets else ""
    )
    if report.dropped_frames:
        corrupt += f", {report.dropped_frames} frames could not be decoded"
    if report.audio_errors:
        corrupt += f", {report.audio_errors} shots without audio (audio_error)"
    return (
        f"{report.film}: {report.shots} shots{resumed}, {verb} {report.written_now}; "
        f"{report.frames} frames ({report.duration:.1f} s of film) in {report.elapsed:.1f} s "
        f"({report.frames_per_second:.0f} frames/s, {report.realtime_factor:.1f}x real time)"
        f"{corrupt} -> {report.out}"
    )
