"""What ``shots`` and ``analyze`` print when a run ends: the per-shot table and the one-line
summary of the run."""

from __future__ import annotations

from typing import Any


def shots_table(records: list[dict[str, Any]]) -> str:
    """The per-shot table printed after a run (timing, sample frames, a few audio features)."""
    lines = [
        f"{'shot':>5}  {'start':<12} {'end':<12} {'frames':>6} {'dur s':>7}  "
        f"{'samples':<24} {'rms':>7} {'centroid':>8} {'tempo':>6}"
    ]
    for r in records:
        f = r.get("audio_features") or {}
        rms = f"{f['rms_energy_mean']:.4f}" if "rms_energy_mean" in f else "-"
        cen = f"{f['spectral_centroid_mean']:.0f}" if "spectral_centroid_mean" in f else "-"
        tempo = f"{f['tempo']:.0f}" if f.get("tempo") else "-"
        samples = ",".join(str(s) for s in r["sample_frames"])
        lines.append(
            f"{r['shot_id']:>5}  {r['start_timecode']:<12} {r['end_timecode']:<12} "
            f"{r['frame_count']:>6} {r['duration']:>7.2f}  {samples:<24} "
            f"{rms:>7} {cen:>8} {tempo:>6}"
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
