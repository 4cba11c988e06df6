"""shots.csv: the edit columns (in/out points, transition kinds) and the sound columns (speech,
music, loudness, beat count), empty for results written before they existed."""

from __future__ import annotations

import csv
import io

from client.shots_csv import CSV_EDIT, CSV_SOUND, shots_csv


def _rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def _record(shot_id: int) -> dict:
    return {
        "shot_id": shot_id,
        "start_frame": 0,
        "end_frame": 49,
        "frame_count": 50,
        "start_time": 0.0,
        "end_time": 2.0,
        "duration": 2.0,
    }


def test_new_shots_fill_the_edit_and_sound_columns() -> None:
    rec = _record(1) | {
        "in_time": 0.2,
        "out_time": 1.6,
        "in_smpte": "00:00:00:05",
        "out_smpte": "00:00:01:15",
        "transition_in": {"kind": "fade_in", "start_frame": 0, "end_frame": 4},
        "transition_out": {"kind": "dissolve", "start_frame": 40, "end_frame": 49},
        "audio_features": {
            "rms_energy_mean": 0.1,
            "speech_ratio": 0.75,
            "music_ratio": 0.0,
            "loudness_lufs": -21.5,
            "loudness_range_lu": None,
            "beat_times": [0.1, 0.6, 1.1],
        },
    }
    (row,) = _rows(shots_csv([rec], analysed=False))
    assert row["in_time"] == "0.2" and row["out_time"] == "1.6"
    assert row["in_smpte"] == "00:00:00:05" and row["out_smpte"] == "00:00:01:15"
    assert row["transition_in"] == "fade_in" and row["transition_out"] == "dissolve"
    assert row["speech_ratio"] == "0.75" and row["music_ratio"] == "0.0"
    assert row["loudness_lufs"] == "-21.5" and row["loudness_range_lu"] == ""
    assert row["beats"] == "3"


def test_older_results_leave_the_new_columns_empty() -> None:
    (row,) = _rows(shots_csv([_record(1) | {"audio_features": {"rms_energy_mean": 0.1}}], False))
    assert all(row[c] == "" for c in [*CSV_EDIT, *CSV_SOUND])
    assert row["rms_energy_mean"] == "0.1"


def test_an_attribute_named_like_a_new_column_is_prefixed() -> None:
    rec = _record(1) | {"caption": "c", "audio_class": "speech", "attributes": {"beats": 0.4}}
    header = shots_csv([rec], analysed=True).splitlines()[0].split(",")
    assert "attribute:beats" in header and header.count("beats") == 1
