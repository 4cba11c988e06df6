"""A real 29.97 fps film (30000/1001) through ``shots``: drop-frame SMPTE timecodes across the
first minute's dropped frame numbers, and the exact rate in run.json ``source``."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

from client.media.probe import probe
from client.options import AudioOptions, ExtractOptions
from client.pipeline.run import extract
from tests.film_factory import ShotSpec, make_film

NTSC = Fraction(30000, 1001)


def test_drop_frame_timecodes_on_a_29_97_film(tmp_path: Path) -> None:
    specs = [
        ShotSpec(frames=1795, brightness=0.8, pattern="bars", audio=None, drift=0.0),
        ShotSpec(frames=20, brightness=0.2, pattern="checker", audio=None, drift=0.0),
    ]
    truth = make_film(tmp_path / "ntsc.mp4", specs, fps=NTSC, size=(96, 64), gop=300)
    info = probe(truth.path)
    assert info.fps == NTSC
    out = tmp_path / "out"
    report = extract(info, out, ExtractOptions(audio=AudioOptions(enabled=False)))
    spans = [(r["start_frame"], r["end_frame"]) for r in report.records]
    assert spans == [(0, 1794), (1795, 1814)]
    assert [(r["start_smpte"], r["end_smpte"]) for r in report.records] == [
        ("00:00:00;00", "00:00:59;25"),
        ("00:00:59;25", "00:01:00;17"),  # frame 1815: ;00 and ;01 of minute 1 were skipped
    ]
    source = json.loads((out / "run.json").read_text())["source"]
    assert source["fps"] == "30000/1001" and source["drop_frame"] is True
    assert abs(source["fps_float"] - 29.97002997) < 1e-6
