"""``report.html`` in a real headless browser (Debian's Chromium driven by Playwright).

Results come from the real CLI on a generated film: ``qwen-client shots`` (no attributes) and
``qwen-client analyze`` against ``tests/fake_analysis_server.py`` (the six default attributes,
and the 38 of examples/trailer_attributes.yaml). Each report is loaded from file:// and its DOM
checked: a tile per shot, a curve per attribute that its checkbox hides, filtering and sorting
by an attribute, hovering and clicking a point, a tile that plays its shot in the embedded
video (seeking to its start, pausing at its end), a caption holding markup shown as text, a film
that cannot be found (no player, a note), a trailer cut made by the real ``qwen-client
trailer`` in the results folder (its section, arc and picks, each playing its source range), a
malformed cut.json (a note), and no console error, page error or request other than file://.
Each test saves a screenshot in its tmp dir; with QWEN_REPORT_SCREENSHOT=PATH the 38-attribute
one is also written there (how docs/report.png is made).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from client.errors import InputError, UsageError
from client.export.report import write_report
from tests.e2e.test_cli_client import cli
from tests.fake_analysis_server import FakeAnalysisServer
from tests.film_factory import FilmTruth, make_film, standard_shots

REPO = Path(__file__).resolve().parents[2]
TRAILER_FILE = REPO / "examples" / "trailer_attributes.yaml"
TOKEN = "e2e-token"  # the one ``cli`` sends
HOSTILE = '</script><script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")


@dataclass
class PageLog:
    """What a page did besides drawing: console errors, page errors, requested URLs."""

    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def assert_clean(self) -> None:
        assert self.errors == []
        assert self.requests and all(url.startswith("file://") for url in self.requests), (
            self.requests
        )


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = shutil.which("chromium")
    if executable is None:
        pytest.skip("Debian's chromium is not installed (scripts/test.sh installs it via apt-get)")
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=executable)
        yield chromium
        chromium.close()


def open_report(browser: Any, report: Path) -> tuple[Any, PageLog]:
    """A new page showing ``report`` (file://), with its log."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    log = PageLog()

    def on_console(message: Any) -> None:
        if message.type == "error":
            log.errors.append(message.text)

    page.on("console", on_console)
    page.on("pageerror", lambda e: log.errors.append(f"page error: {e}"))
    page.on("request", lambda r: log.requests.append(r.url))
    page.goto(report.as_uri())
    page.wait_for_selector("#sheet .tile")
    return page, log


@pytest.fixture(scope="module")
def film(tmp_path_factory: pytest.TempPathFactory) -> FilmTruth:
    return make_film(tmp_path_factory.mktemp("report") / "film.mp4", standard_shots())


def _records(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "shots.jsonl").read_text().splitlines()]


def _analyze(film: FilmTruth, name: str, *extra: str) -> Path:
    out = film.path.parent / name
    with FakeAnalysisServer(token=TOKEN) as server:
        proc = cli("analyze", str(film.path), "-s", server.url, "--out", str(out), "-q", *extra)
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="module")
def shots_results(film: FilmTruth) -> Path:
    out = film.path.parent / "shots"
    proc = cli("shots", str(film.path), "--out", str(out), "-q", token=None)
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="module")
def scored_results(film: FilmTruth) -> Path:
    """Six default attributes; shot 2's caption replaced by markup that must stay text."""
    out = _analyze(film, "scored")
    records = _records(out)
    records[1]["caption"] = HOSTILE
    (out / "shots.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return out


@pytest.fixture(scope="module")
def trailer_results(film: FilmTruth) -> Path:
    return _analyze(film, "trailer", "--attributes", str(TRAILER_FILE))


@pytest.fixture(scope="module")
def cut_results(film: FilmTruth, scored_results: Path) -> Path:
    """The scored results with a trailer cut written into them by the real command, which
    refreshes the report.html that analyze left there."""
    out = film.path.parent / "with-cut"
    shutil.copytree(scored_results, out)
    assert (out / "report.html").is_file()
    proc = cli(
        "trailer",
        str(out),
        *("--profile", "thriller", "--duration", "3", "--max-clip", "1", "--allow-adjacent"),
        *("--out", str(out / "cut.otio")),
        token=None,
    )
    assert proc.returncode == 0, proc.stderr
    assert "could not be refreshed" not in proc.stderr
    return out


def tc(record: dict[str, Any], end: str = "start") -> str:
    """The timecode the page shows: SMPTE when the record has it, else the ms timecode."""
    return record.get(f"{end}_smpte") or record[f"{end}_timecode"]


def span(record: dict[str, Any]) -> str:
    return f"{tc(record)} – {tc(record, 'end')}"


def visible_tiles(page: Any) -> list[int]:
    """Shot ids of the tiles shown, in page order."""
    return page.eval_on_selector_all(
        "#sheet .tile:not([hidden])", "ts => ts.map(t => Number(t.dataset.shotId))"
    )


def play_and_check(page: Any, locator: Any, start: float, end: float) -> None:
    """Click ``locator`` and see the video seek into the shot, play, and pause at its end."""
    locator.click()
    page.wait_for_function(
        "([s, e]) => { const v = document.getElementById('player');"
        " return v.currentTime >= s - 0.05 && v.currentTime < e; }",
        arg=[start, end],
        timeout=10_000,
    )
    page.wait_for_function(
        "() => document.getElementById('player').paused", timeout=(end - start + 10) * 1000
    )
    stopped = page.evaluate("document.getElementById('player').currentTime")
    assert end - 0.1 <= stopped <= end + 0.35, (start, end, stopped)


def test_shots_only_report_has_the_contact_sheet_and_timing_and_plays_a_shot(
    browser: Any, film: FilmTruth, shots_results: Path, tmp_path: Path
) -> None:
    report = write_report(shots_results)
    assert report == shots_results.resolve() / "report.html"
    records = _records(shots_results)
    page, log = open_report(browser, report)
    assert visible_tiles(page) == [r["shot_id"] for r in records] == [1, 2, 3, 4, 5]
    # Thumbnails are the shot's middle frame, linked relative to the report, and decode.
    srcs = page.eval_on_selector_all("#sheet img.thumb", "is => is.map(i => i.getAttribute('src'))")
    assert srcs == [r["images"][2] for r in records]
    page.wait_for_function(
        "() => [...document.querySelectorAll('#sheet img')].every(i => i.naturalWidth > 0)"
    )
    # No attributes: no arc, no sort/filter controls, no top-attribute lists, no errors.
    assert page.locator("#arc-section, #attributes-section").count() == 0
    assert page.locator("svg .curve, #sort-by, #filter-by, .tile .top").count() == 0
    tile3 = page.locator('.tile[data-shot-id="3"]')
    assert span(records[2]) in tile3.inner_text()
    assert "2.00 s" in tile3.inner_text()
    assert page.locator("#player").get_attribute("src") == "../film.mp4"
    play_and_check(page, tile3, records[2]["start_time"], records[2]["end_time"])
    assert "playing" in (tile3.get_attribute("class") or "")
    facts = page.inner_text("#facts")
    assert "Shots\t5" in facts or "Shots\n5" in facts, facts
    page.screenshot(path=str(tmp_path / "shots_report.png"), full_page=True)
    log.assert_clean()
    assert (tmp_path / "shots_report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_scored_report_arc_toggles_filters_sorts_and_plays(
    browser: Any, scored_results: Path, tmp_path: Path
) -> None:
    records = _records(scored_results)
    vocabulary = list(records[0]["attributes"])
    assert len(vocabulary) == 6
    page, log = open_report(browser, write_report(scored_results))
    assert len(visible_tiles(page)) == len(records)
    assert page.locator("#cut-section").count() == 0  # no cut.json: no trailer section
    # The caption holding markup is text: no script ran, no element was made from it.
    assert page.evaluate("window.__pwned") is None
    assert page.inner_text('.tile[data-shot-id="2"] .caption') == HOSTILE
    assert page.locator("#sheet script, #sheet img[onerror]").count() == 0
    # One curve per attribute, all shown (six or fewer); unticking one hides only it.
    curves = page.locator("#arc svg g.curve")
    assert curves.evaluate_all("gs => gs.map(g => g.dataset.attribute)") == vocabulary
    assert all(curves.nth(i).is_visible() for i in range(6))
    page.locator('#attribute-toggles input[data-attribute="darkness"]').uncheck()
    assert not page.locator('g.curve[data-attribute="darkness"]').is_visible()
    assert page.locator('g.curve[data-attribute="suspense"]').is_visible()
    # Filtering by an attribute keeps the shots at or above the slider's value.
    values = {r["shot_id"]: r["attributes"]["suspense"] for r in records}
    threshold = round(sorted(values.values())[2], 2)  # between the lowest and the highest
    page.select_option("#filter-by", label="suspense")
    page.locator("#min-value").fill(str(threshold))
    kept = [sid for sid, v in values.items() if round(v, 4) >= threshold]
    assert visible_tiles(page) == kept and 0 < len(kept) < len(records)
    assert page.inner_text("#tile-count") == f"Showing {len(kept)} of {len(records)} shots"
    page.select_option("#filter-by", label="no filter")
    page.select_option("#sort-by", label="highest intensity first")
    by_intensity = sorted(records, key=lambda r: (-r["attributes"]["intensity"], r["start_time"]))
    assert visible_tiles(page) == [r["shot_id"] for r in by_intensity]
    # Tiles list their three highest attributes.
    top = page.locator('.tile[data-shot-id="1"] .top li').evaluate_all(
        "ls => ls.map(l => l.dataset.attribute)"
    )
    assert top == sorted(vocabulary, key=lambda a: -records[0]["attributes"][a])[:3]
    # Summary: each attribute's peak shot, from the records.
    peak = max(records, key=lambda r: (r["attributes"]["motion"], -r["shot_id"]))
    row = page.inner_text('.attribute-row[data-attribute="motion"]')
    assert f"#{peak['shot_id']} {tc(peak)}" in row
    # Hovering a point shows its shot; clicking it plays the shot.
    point = page.locator('g.curve[data-attribute="suspense"] circle[data-shot-id="2"]')
    point.hover()
    tip = page.locator("#tooltip")
    assert tip.is_visible()
    assert HOSTILE in tip.inner_text() and f"suspense: {values[2]:.2f}" in tip.inner_text()
    assert f"Shot 2 · {span(records[1])}" in tip.inner_text()
    play_and_check(page, point, records[1]["start_time"], records[1]["end_time"])
    tile4 = page.locator('.tile[data-shot-id="4"]')
    play_and_check(page, tile4, records[3]["start_time"], records[3]["end_time"])
    page.screenshot(path=str(tmp_path / "scored_report.png"), full_page=True)
    log.assert_clean()


def test_38_attribute_report(browser: Any, trailer_results: Path, tmp_path: Path) -> None:
    records = _records(trailer_results)
    vocabulary = list(records[0]["attributes"])
    assert len(vocabulary) == 38
    page, log = open_report(browser, write_report(trailer_results))
    assert len(visible_tiles(page)) == len(records)
    curves = page.locator("#arc svg g.curve")
    assert curves.evaluate_all("gs => gs.map(g => g.dataset.attribute)") == vocabulary
    shown = [curves.nth(i).is_visible() for i in range(38)]
    assert shown == [True] * 6 + [False] * 32  # the first six; the rest a tick away
    page.click("#show-all")
    assert all(curves.nth(i).is_visible() for i in range(38))
    page.click("#hide-all")
    assert not any(curves.nth(i).is_visible() for i in range(38))
    for name in vocabulary[:6]:
        page.locator(f'#attribute-toggles input[data-attribute="{name}"]').check()
    assert page.locator(".attribute-row").count() == 38
    assert page.locator("#sort-by option").count() == 39
    page.locator('g.curve[data-attribute="suspense"] circle[data-shot-id="4"]').hover()
    path = tmp_path / "trailer_report.png"
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("QWEN_REPORT_SCREENSHOT"):
        page.screenshot(path=os.environ["QWEN_REPORT_SCREENSHOT"], full_page=True)
    log.assert_clean()
    assert path.stat().st_size > 10_000


def test_a_film_out_of_reach_gives_a_note_instead_of_a_player(
    browser: Any, scored_results: Path, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "copied" / "scored"
    shutil.copytree(scored_results, elsewhere)
    manifest = json.loads((elsewhere / "run.json").read_text())
    manifest.pop("source", None)  # a newer client's film path would still find the film
    (elsewhere / "run.json").write_text(json.dumps(manifest))
    page, log = open_report(browser, write_report(elsewhere))
    assert page.locator("video").count() == 0
    note = page.inner_text("#no-video")
    assert "film.mp4" in note and "not reachable" in note
    page.locator('.tile[data-shot-id="3"]').click()
    third = _records(elsewhere)[2]
    assert page.inner_text("#now-playing").startswith(f"Shot 3 · {span(third)}")
    log.assert_clean()


def test_a_2000_shot_38_attribute_report_stays_small_and_quick(
    browser: Any, trailer_results: Path, tmp_path: Path
) -> None:
    # A feature film's worth of shots (2,000 x 2 s, every one scored on 38 attributes), made by
    # repeating the real records with new timing: the page must stay small and usable.
    template = _records(trailer_results)
    big = tmp_path / "big"
    big.mkdir()
    lines = []
    for i in range(2000):
        rec = dict(template[i % len(template)], shot_id=i + 1)
        rec.update(start_frame=50 * i, end_frame=50 * i + 49, start_time=2.0 * i)
        rec.update(end_time=2.0 * i + 2.0, caption=f"shot {i + 1}: " + "a long caption " * 8)
        for key in ("start_smpte", "end_smpte", "start_timecode", "end_timecode", "images"):
            rec.pop(key, None)
        rec.pop("frames", None)
        lines.append(json.dumps(rec) + "\n")
    (big / "shots.jsonl").write_text("".join(lines))
    report = write_report(big)
    assert report.stat().st_size < 2_500_000  # ~1.2 KB a shot: links, not embedded images
    page, log = open_report(browser, report)
    assert len(visible_tiles(page)) == 2000
    assert page.locator("#arc svg g.curve").count() == 38
    assert page.locator("#arc svg circle.point").count() == 6 * 2000  # only the shown curves
    assert page.inner_text('.tile[data-shot-id="1999"] .tc') == "01:06:36.000 – 01:06:38.000"
    page.select_option("#filter-by", label="suspense")
    page.locator("#min-value").fill("0.9")
    expected = sum(
        1 for i in range(2000) if template[i % len(template)]["attributes"]["suspense"] >= 0.9
    )
    assert len(visible_tiles(page)) == expected
    log.assert_clean()


def test_trailer_cut_section_draws_the_arc_and_plays_each_pick(
    browser: Any, cut_results: Path, tmp_path: Path
) -> None:
    cut = json.loads((cut_results / "cut.json").read_text())
    clips, arc = cut["clips"], cut["arc"]
    assert len(clips) >= 3 and [c["position"] for c in clips] == list(range(1, len(clips) + 1))
    page, log = open_report(browser, cut_results / "report.html")  # as the trailer refreshed it
    section = page.locator("#cut-section")
    assert section.is_visible()
    facts = page.inner_text("#cut-facts")
    assert facts.startswith("Profile thriller")
    assert "asked 3.00 s" in facts and f"achieved {cut['achieved']['seconds']:.2f} s" in facts
    assert f"{len(clips)} clips" in facts
    # The arc: one point per pick in cut order (left to right), at its level; acts labelled.
    points = page.locator("#cut-chart circle.pick-point")
    assert points.count() == len(clips) == len(arc["picks"])
    got = points.evaluate_all(
        "cs => cs.map(c => [Number(c.dataset.position), Number(c.getAttribute('cx')),"
        " Number(c.getAttribute('cy'))])"
    )
    assert [p for p, _, _ in got] == [p["position"] for p in arc["picks"]]
    xs = [x for _, x, _ in got]
    assert xs == sorted(xs) and len(set(xs)) == len(xs)
    top, plot = 30, 150  # the chart's plot area (cut.js)
    for (_, _, y), pick in zip(got, arc["picks"], strict=True):
        assert y == pytest.approx(top + (1 - pick["level"]) * plot, abs=0.01)
    acts = page.locator("#cut-chart .act-label").evaluate_all("ts => ts.map(t => t.textContent)")
    assert acts == list(dict.fromkeys(c["act"] for c in clips))
    target = page.locator("#cut-chart path.target").get_attribute("d") or ""
    assert target.count("L") + target.count("M") == len(arc["target_curve"])
    # The picks in cut order: shot, act, source timecodes, score and why.
    rows = page.locator("#cut-picks tr.pick")
    assert rows.count() == len(clips)
    for i, clip in enumerate(clips):
        text = rows.nth(i).inner_text()
        assert clip["act"] in text and clip["why"] in text and f"{clip['score']:.3f}" in text
        assert f"{clip['source_in_timecode']} – {clip['source_out_timecode']}" in text
        assert rows.nth(i).get_attribute("data-shot-id") == str(clip["shot_id"])
    # Clicking a row plays that clip's source range and pauses at its out point.
    last = clips[-1]
    play_and_check(
        page, rows.nth(len(clips) - 1), last["source_in_seconds"], last["source_out_seconds"]
    )
    assert "playing" in (rows.nth(len(clips) - 1).get_attribute("class") or "")
    tile = page.locator(f'.tile[data-shot-id="{last["shot_id"]}"]')
    assert "playing" in (tile.get_attribute("class") or "")
    assert page.inner_text("#now-playing").startswith(f"Pick {len(clips)} ({last['act']})")
    # Clicking a point of the arc does the same for its pick.
    first = clips[0]
    play_and_check(page, points.nth(0), first["source_in_seconds"], first["source_out_seconds"])
    page.screenshot(path=str(tmp_path / "cut_report.png"), full_page=True)
    log.assert_clean()


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("{not json", "Expecting property name"),
        ('{"format": 1, "clips": []}', "no 'film' field"),
        ("[1, 2]", "not a JSON object"),
    ],
)
def test_a_malformed_cut_json_is_a_note_not_an_error(
    browser: Any, cut_results: Path, tmp_path: Path, text: str, reason: str
) -> None:
    folder = tmp_path / "results"
    shutil.copytree(cut_results, folder)
    (folder / "cut.json").write_text(text)
    page, log = open_report(browser, write_report(folder))
    note = page.inner_text("#cut-note")
    assert "cut.json is here but cannot be shown" in note and reason in note, note
    assert page.locator("#cut-chart, #cut-picks").count() == 0
    assert len(visible_tiles(page)) == len(_records(folder))  # the rest of the page is there
    log.assert_clean()


class _DataBlock(HTMLParser):
    """The text of the page's <script type="application/json"> element, as a browser sees it."""

    def __init__(self) -> None:
        super().__init__()
        self.inside = False
        self.text = ""
        self.scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.scripts += tag == "script"
        self.inside = tag == "script" and ("type", "application/json") in attrs

    def handle_endtag(self, tag: str) -> None:
        self.inside = False

    def handle_data(self, data: str) -> None:
        if self.inside:
            self.text += data


def test_written_file_data_and_errors(
    film: FilmTruth, scored_results: Path, tmp_path: Path
) -> None:
    # ``out`` as a directory or a file; the data block parses back to the records' text.
    into_dir = write_report(scored_results, tmp_path)
    assert into_dir == tmp_path / "report.html"
    named = write_report(scored_results, tmp_path / "named.html")
    page = named.read_text(encoding="utf-8")
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in page and "<link" not in page and "@import" not in page
    parser = _DataBlock()
    parser.feed(page)
    assert parser.scripts == 2  # the data and the page's code, nothing from a caption
    data = json.loads(parser.text)
    assert data["shots"][1]["caption"] == HOSTILE
    assert data["film"]["src"] == os.path.relpath(film.path, tmp_path)  # the film, from here
    # Thumbnails link the middle sample frame relative to where the report is.
    first = _records(scored_results)[0]
    frames = first.get("frames") or first.get("images") or []
    middle = (
        os.path.relpath(scored_results / frames[len(frames) // 2], tmp_path) if frames else None
    )
    assert data["shots"][0]["thumb"] == middle
    # Bad input: one clear error each, with the CLI's exit code 2.
    with pytest.raises(InputError, match="no shots.jsonl"):
        write_report(tmp_path)
    with pytest.raises(InputError, match="no such directory"):
        write_report(tmp_path / "missing")
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(UsageError, match="cannot write the report") as err:
        write_report(scored_results, blocker / "report.html")
    assert err.value.exit_code == 2
