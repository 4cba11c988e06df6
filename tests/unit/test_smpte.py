"""SMPTE timecodes of frame numbers (``client.media.smpte``) and of shot records
(``Shot.as_record``): known values at 25, 24, 23.976, 29.97 and 59.94 fps, drop-frame only at
30000/1001 and 60000/1001, and the exclusive out point."""

from __future__ import annotations

from fractions import Fraction

import pytest

from client.media.shot import Shot
from client.media.smpte import is_drop_frame, nominal_rate, smpte

NTSC = Fraction(30000, 1001)
NTSC_60 = Fraction(60000, 1001)
FILM_NTSC = Fraction(24000, 1001)


@pytest.mark.parametrize(
    ("frame", "fps", "expected"),
    [
        (0, Fraction(25), "00:00:00:00"),
        (24, Fraction(25), "00:00:00:24"),
        (25, Fraction(25), "00:00:01:00"),
        (90000, Fraction(25), "01:00:00:00"),
        (90000 + 25 * 61 + 7, Fraction(25), "01:01:01:07"),
        (23, Fraction(24), "00:00:00:23"),
        (24 * 3600, Fraction(24), "01:00:00:00"),
        # 23.976 is non-drop, counted in 24-frame seconds (it runs behind the clock)
        (24 * 3600, FILM_NTSC, "01:00:00:00"),
        (1439, FILM_NTSC, "00:00:59:23"),
        # 29.97 drop-frame: ;00 and ;01 are skipped each minute except every tenth
        (0, NTSC, "00:00:00;00"),
        (1799, NTSC, "00:00:59;29"),
        (1800, NTSC, "00:01:00;02"),
        (3597, NTSC, "00:01:59;29"),
        (3598, NTSC, "00:02:00;02"),
        (17981, NTSC, "00:09:59;29"),
        (17982, NTSC, "00:10:00;00"),
        (17982 + 1800, NTSC, "00:11:00;02"),
        (107892, NTSC, "01:00:00;00"),
        # 59.94 drop-frame: four frame numbers a minute
        (3599, NTSC_60, "00:00:59;59"),
        (3600, NTSC_60, "00:01:00;04"),
        (35964, NTSC_60, "00:10:00;00"),
        (215784, NTSC_60, "01:00:00;00"),
        (30, Fraction(30), "00:00:01:00"),
        (108000, Fraction(30), "01:00:00:00"),
    ],
)
def test_known_timecodes(frame: int, fps: Fraction, expected: str) -> None:
    assert smpte(frame, fps) == expected


def test_drop_frame_only_at_29_97_and_59_94() -> None:
    assert is_drop_frame(NTSC) and is_drop_frame(NTSC_60)
    for fps in (Fraction(24), FILM_NTSC, Fraction(25), Fraction(30), Fraction(50), Fraction(60)):
        assert not is_drop_frame(fps)
        assert smpte(1234, fps)[8] == ":"
    assert smpte(1234, NTSC)[8] == ";"
    assert [nominal_rate(f) for f in (FILM_NTSC, NTSC, NTSC_60, Fraction(25))] == [24, 30, 60, 25]


def test_drop_frame_timecodes_count_up_without_gaps_except_dropped_numbers() -> None:
    """Every frame of 12 minutes at 29.97 has a distinct timecode, and the only frame numbers
    missing are ;00 and ;01 of minutes not divisible by ten."""
    seen = [smpte(f, NTSC) for f in range(12 * 60 * 30)]
    assert len(set(seen)) == len(seen)
    assert seen == sorted(seen)  # zero-padded, so string order is time order
    skipped = {f"00:{m:02d}:00;{ff:02d}" for m in range(1, 12) if m % 10 for ff in (0, 1)}
    assert not skipped & set(seen)
    assert "00:10:00;00" in seen and "00:10:00;01" in seen


def test_negative_frames_are_refused() -> None:
    with pytest.raises(ValueError):
        smpte(-1, Fraction(25))


def test_shot_record_carries_smpte_with_an_exclusive_out_point() -> None:
    shot = Shot(shot_id=3, start_frame=1800, end_frame=17981, fps=NTSC)
    record = shot.as_record()
    assert record["start_smpte"] == "00:01:00;02"
    assert record["end_smpte"] == "00:10:00;00"  # frame 17982: the next shot's first frame
    pal = Shot(shot_id=1, start_frame=0, end_frame=89999, fps=Fraction(25)).as_record()
    assert (pal["start_smpte"], pal["end_smpte"]) == ("00:00:00:00", "01:00:00:00")
