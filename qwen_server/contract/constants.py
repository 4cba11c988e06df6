"""Dependency-free constants of the HTTP contract: attribute names, id rules, limits.

One definition for the server's pydantic models, the session store and the client (which
imports this module on machines without the server's dependencies). Standard library only.
"""

from __future__ import annotations

import re

# The six v1 attributes, in the order every output lists them.
ATTRIBUTES: tuple[str, ...] = (
    "suspense",
    "darkness",
    "ambiguity",
    "emotional_tension",
    "intensity",
    "motion",
)

# Largest time a shot may carry, in seconds (7 days). Far beyond any film, and small enough that
# no timecode, sum or difference of times can overflow (1e306 s once turned /chat into a 500).
MAX_TIME_S = 604_800.0
# The largest shot id: 2**53 is the largest integer every JSON reader (JavaScript too) keeps exact.
MAX_SHOT_ID = 2**53

# A film session id: safe in URLs, file names and logs.
SESSION_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
SESSION_ID_RE = re.compile(SESSION_ID_PATTERN)
SESSION_ID_RULE = (
    "1-128 characters: letters, digits, '.', '_' or '-', starting with a letter or digit"
)


def is_valid_session_id(value: object) -> bool:
    """Whether ``value`` is a session id the server accepts (``SESSION_ID_RULE``)."""
    return isinstance(value, str) and SESSION_ID_RE.fullmatch(value) is not None


# Bounds on what a chat caller may send. A feature film has ~1,000-3,000 shots; 20,000 leaves
# room for long documentaries while keeping one request's work bounded (the body size limit of
# the server applies as well).
MAX_INLINE_SHOTS = 20_000
MAX_QUESTION_CHARS = 4_000
MAX_HISTORY_MESSAGES = 20
MAX_HISTORY_MESSAGE_CHARS = 8_000
MAX_CAPTION_CHARS = 2_000

# Bounds of the per-shot speech, beat and loudness features (issue 15). The client merges the
# closest speech segments when a shot has more than MAX_SPEECH_SEGMENTS.
MAX_SPEECH_SEGMENTS = 64
MAX_BEAT_TIMES = 512
# Integrated loudness (BS.1770) of anything a film can carry: -120 LUFS is far below the -70
# absolute gate, +10 above a full-scale square wave (+3); loudness range (EBU 3342) in LU.
LUFS_RANGE = (-120.0, 10.0)
MAX_LOUDNESS_RANGE_LU = 100.0
