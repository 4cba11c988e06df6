"""Speech, loudness, beats and transitions reach every output a person or an editor reads.

A generated film with a dissolve and a fade through black, whose soundtrack is a real speech
recording (../shared/media/speech_jfk_11s.flac, muxed in as AAC), goes through the real
``qwen-client shots`` and ``qwen-client export``; then shots.csv, the OTIO markers and
report.html (in Debian's Chromium) must show the dialogue, the loudness, the beats and the
transitions the run measured.
"""

from __future__ import annotations

import csv
import io
import json
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import opentimelineio as otio
import pytest

from tests.audio_media import decode_audio
from tests.cli_runner import run_cli
from tests.e2e.test_report_html import browser, open_report  # noqa: F401  (fixture)
from tests.film_factory import ShotSpec, make_film
from tests.film_joins import Join

SPEECH = Path(__file__).resolve().parents[2].parent / "shared" / "media" / "speech_jfk_11s.flac"
RATE = 44100


def _mux_soundtrack(video: Path, soundtrack: np.ndarray, out: Path) -> None:
    """``video``'s stream copied as it is, with ``soundtrack`` (mono float) encoded as AAC."""
    with av.open(str(video)) as src, av.open(str(out), "w") as dst:
        vin = src.streams.video[0]
        vout = dst.add_stream_from_template(vin)
        aout = dst.add_stream("aac", rate=RATE)
        aout.layout = "mono"
        aout.time_base = Fraction(1, RATE)
        for packet in src.demux(vin):
            if packet.dts is None:
                continue
            packet.stream = vout
            dst.mux(packet)
        chunk = 1024
        for start in range(0, len(soundtrack), chunk):
            part = soundtrack[start : start + chunk].astype(np.float32)[None, :]
            frame = av.AudioFrame.from_ndarray(part, format="fltp", layout="mono")
            frame.sample_rate = RATE
            frame.pts = start
            for packet in aout.encode(frame):
                dst.mux(packet)
        for packet in aout.encode(None):
            dst.mux(packet)


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not SPEECH.is_file():
        pytest.skip(f"{SPEECH} is missing (../shared/media comes with the checkout)")
    tmp = tmp_path_factory.mktemp("sound_edit")
    shots = [
        ShotSpec(frames=75, brightness=0.5, pattern="checker", audio=None),
        ShotSpec(frames=75, brightness=0.6, pattern="circles", audio=None),
        ShotSpec(frames=75, brightness=0.4, pattern="gradient", audio=None),
    ]
    truth = make_film(
        tmp / "silent.mp4", shots, size=(320, 240), joins=[Join("dissolve", 12), Join("fade", 8, 6)]
    )
    speech = decode_audio(SPEECH, sr=RATE)
    seconds = truth.frame_count / 25
    assert len(speech) >= seconds * RATE * 0.9, "the recording is shorter than the film"
    film = tmp / "film.mp4"
    _mux_soundtrack(truth.path, speech[: int(seconds * RATE)], film)
    out = tmp / "out"
    proc = run_cli("shots", str(film), "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    exported = run_cli("export", str(out), "--format", "html")
    assert exported.returncode == 0, exported.stderr
    exported = run_cli("export", str(out), "--format", "otio")
    assert exported.returncode == 0, exported.stderr
    return out


def _records(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "shots.jsonl").read_text().splitlines()]


def test_records_and_csv_carry_speech_loudness_beats_and_transitions(results: Path) -> None:
    records = _records(results)
    assert len(records) == 3
    assert [r["transition_in"] and r["transition_in"]["kind"] for r in records] == [
        None,
        "dissolve",
        "fade_in",
    ]
    assert records[1]["transition_out"]["kind"] == "fade_out"
    # Speech is measured on every shot of a film whose soundtrack is a speech.
    assert all(r["speech_error"] is None for r in records)
    assert sum(r["audio_features"]["speech_ratio"] >= 0.3 for r in records) >= 2
    assert all(r["audio_features"]["loudness_lufs"] is not None for r in records)
    rows = list(csv.DictReader(io.StringIO((results / "shots.csv").read_text())))
    assert [row["transition_in"] for row in rows] == ["", "dissolve", "fade_in"]
    for row, rec in zip(rows, records, strict=True):
        assert float(row["speech_ratio"]) == rec["audio_features"]["speech_ratio"]
        assert float(row["loudness_lufs"]) == rec["audio_features"]["loudness_lufs"]
        assert int(row["beats"]) == len(rec["audio_features"]["beat_times"])
    summary = json.loads((results / "summary.json").read_text())
    kinds = [t["kind"] for t in summary["transitions"]]
    assert kinds == ["dissolve", "fade_out", "fade_in"]
    assert [c["kind"] for c in summary["technical_cues"]] == ["black"]


def test_timeline_markers_carry_sound_and_edit(results: Path) -> None:
    timeline = otio.adapters.read_from_file(str(results / "timeline.otio"))
    clips = list(timeline.find_clips())
    meta = [clip.markers[0].metadata["qwen"] for clip in clips]
    assert meta[1]["edit"]["transition_in"]["kind"] == "dissolve"
    assert meta[2]["edit"]["transition_in"]["kind"] == "fade_in"
    records = _records(results)
    for m, rec in zip(meta, records, strict=True):
        assert m["sound"]["speech"] == pytest.approx(
            rec["audio_features"]["speech_ratio"], abs=1e-3
        )
        assert len(m["sound"]["beats"]) == len(rec["audio_features"]["beat_times"])


def test_report_shows_dialogue_loudness_and_transitions(
    browser: Any,  # noqa: F811
    results: Path,
) -> None:
    page, log = open_report(browser, results / "report.html")
    try:
        sound = page.locator(".tile .badge.sound").all_inner_texts()
        assert sum("dialogue" in text for text in sound) >= 2, sound
        assert all("LUFS" in text for text in sound), sound
        edit = page.locator(".tile .badge.edit").all_inner_texts()
        assert any("in: dissolve" in text for text in edit), edit
        assert any("out: fade out" in text for text in edit), edit
        assert any("in: fade in" in text for text in edit), edit
        facts = page.locator("#facts").inner_text()
        assert "dissolve 1" in facts and "fade in 1" in facts and "fade out 1" in facts, facts
        assert "Shots with dialogue" in facts, facts
        # The black between the fade-out and the fade-in is one segment, though it lies in two
        # shots (each record holds its own piece).
        assert "Black segments\n1" in facts or "Black segments\t1" in facts, facts
        page.screenshot(path=str(results / "report_sound_edit.png"), full_page=True)
        log.assert_clean()
    finally:
        page.close()
