"""Films whose shots are joined by every kind of transition, with their truth.

One builder for the transition tests (``tests/integration/test_client_transitions.py``, the
first ``len(JOIN_CYCLE) - 2`` joins) and the accuracy benchmark (``scripts/bench_transitions.py``,
36 shots): dissolves of several lengths, fades through black, hard cuts to and from black and a
plain hard cut, cycling; shot lengths, brightness and textures vary so no two neighbours match.
"""

from __future__ import annotations

from pathlib import Path

from tests.film_factory import FilmTruth, Join, ShotSpec, make_film

TEXTURES = ("bars", "checker", "circles", "noise", "gradient")
JOIN_CYCLE: list[Join | None] = [
    Join("dissolve", 12),
    Join("fade", 12, 8),
    None,  # a hard cut
    Join("dissolve", 20),
    Join("fade", 0, 10, 0),  # hard cut to black, black, hard cut from black
    Join("dissolve", 8),
    Join("fade", 15, 0, 10),
    Join("fade", 10, 6, 0),
    Join("dissolve", 24),
    Join("fade", 0, 8, 12),
]


def joined_film(path: Path, shots: int, seed: int = 3) -> FilmTruth:
    """A silent 25 fps film of ``shots`` shots, joined by ``JOIN_CYCLE`` in turn."""
    specs = [
        ShotSpec(
            frames=40 + 7 * (i % 5),
            brightness=0.3 + 0.5 * ((i * 0.37) % 1.0),
            pattern=TEXTURES[i % len(TEXTURES)],
            audio=None,
        )
        for i in range(shots)
    ]
    joins = [JOIN_CYCLE[i % len(JOIN_CYCLE)] for i in range(shots - 1)]
    return make_film(path, specs, joins=joins, seed=seed)
