"""``qwen-client trailer``: a first rough trailer cut from a results folder's scores.

``profiles`` reads genre profiles (weights over attributes; a few ship in ``profiles/*.yaml``)
and resolves them against the attributes a results folder holds; ``selection`` is the
deterministic pick / trim / duration-fit algorithm; ``arc`` orders the picks into three acts
and describes the target curve; ``cut`` writes the timeline (through ``client.export``) and the
``cut.json`` that explains every pick. Nothing heavy is imported here.
"""

from __future__ import annotations

import logging

log = logging.getLogger("client.trailer")
