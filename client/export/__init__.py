"""Editor exports of a results folder: OTIO, CMX 3600 EDL, FCP X XML, CSV (and the HTML report).

``client.export.results.load_results`` reads a results folder into typed objects every exporter
shares; ``client.export.timeline`` builds an OpenTimelineIO timeline from clip specs and writes
it in the format its file name ends with; ``client.export.formats`` runs one export by format
name (``qwen-client export``) and ``write_default_exports`` (what ``analyze`` writes at the end).
Nothing is imported here, so reading results does not load OpenTimelineIO.
"""

FORMATS: tuple[str, ...] = ("otio", "edl", "fcpxml", "csv", "html")
"""The formats of ``qwen-client export --format`` (kept here so the CLI need not load OTIO)."""

DEFAULT_NAMES: dict[str, str] = {
    "otio": "timeline.otio",
    "edl": "timeline.edl",
    "fcpxml": "timeline.fcpxml",
    "csv": "shots.csv",
    "html": "report.html",
}
"""The file each format writes in the results folder when no --out is given."""
