"""client.export.shot_facts: the sound and edit facts every output shows, from a record."""

from __future__ import annotations

from client.export.shot_facts import edit_facts, edit_summary, has_dialogue, sound_facts


def _dissolve(start: int, end: int) -> dict:
    return {"kind": "dissolve", "start_frame": start, "end_frame": end}


def test_sound_facts_read_the_new_audio_fields_and_skip_non_numbers() -> None:
    raw = {
        "audio_features": {
            "speech_ratio": 0.8123,
            "music_ratio": 0.05,
            "loudness_lufs": -20.04,
            "loudness_range_lu": 6.5,
            "tempo": 119.9,
            "beat_times": [0.1, "x", 0.6, float("nan")],
        }
    }
    facts = sound_facts(raw)
    assert facts == {
        "speech": 0.812,
        "music": 0.05,
        "lufs": -20.0,
        "lra": 6.5,
        "tempo": 119.9,
        "beats": [0.1, 0.6],
    }
    assert has_dialogue(raw)


def test_older_records_have_no_facts() -> None:
    old = {"audio_features": {"rms_energy_mean": 0.1}, "start_frame": 0}
    assert sound_facts(old) is None and edit_facts(old) is None and not has_dialogue(old)
    assert sound_facts({}) is None


def test_edit_summary_counts_a_shared_transition_once() -> None:
    records = [
        {"transition_out": _dissolve(40, 49), "in_time": 0.0, "out_time": 1.6},
        {
            "transition_in": _dissolve(40, 49),
            "transition_out": {"kind": "fade_out", "start_frame": 90, "end_frame": 99},
            "technical_cues": [{"kind": "black", "start_frame": 100, "end_frame": 110}],
            "audio_features": {"speech_ratio": 0.5},
        },
        {
            "transition_in": {"kind": "fade_in", "start_frame": 111, "end_frame": 120},
            # The same black segment's second half (split at the shot boundary), and another.
            "technical_cues": [
                {"kind": "black", "start_frame": 111, "end_frame": 112},
                {"kind": "black", "start_frame": 130, "end_frame": 140},
            ],
        },
    ]
    assert edit_summary(records) == {
        "transitions": {"dissolve": 1, "fade_in": 1, "fade_out": 1},
        "black_segments": 2,
        "dialogue_shots": 1,
    }
    assert edit_facts(records[1])["black"] == 1
