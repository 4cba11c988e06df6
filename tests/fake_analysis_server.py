"""A small but real analysis server for client tests: FastAPI + uvicorn on 127.0.0.1.

It implements the contract's ``POST /analyze_batch`` (validated with the real
``qwen_server.contract.analysis`` models) and ``GET /health``, with bearer auth, and answers with
deterministic results computed from the request: ``darkness`` is one minus the mean luma of the
shot's JPEGs, ``audio_class`` follows the RMS and zero-crossing rate, other scores are hashes of
the shot's content.

Attributes follow the request like the real server's: the body's (or a shot's own)
``attributes`` are resolved against the server's vocabulary (``vocabulary=``, default the six v1
attributes) with the contract's ``resolve_requested``, and every result holds exactly those
names in that order (``attributes``, ``model_attributes``, ``evidence``), next to the other
blocks of the contract's ``ShotResult``: ``measured`` (luminance from the JPEGs, the rest
hashes), ``audio`` (cues from the audio features, null without them) and ``generation`` (the
batch size, fixed token counts); an unknown name is a
422 whose ``detail`` names the item (``attributes[1]: 'x' is not in this server's
vocabulary ...``). Tests steer failures through ``FakeAnalysisServer.behaviour``::

    with FakeAnalysisServer(token="t") as server:
        server.behaviour.fail_503 = 2        # next 2 batches: 503 + Retry-After
        server.behaviour.drop = 1            # next batch: connection dropped mid-response
        server.behaviour.always_401 = True   # every batch: 401
        server.behaviour.always_fail = True  # every batch: 503 without Retry-After
        server.behaviour.delay = 0.2         # seconds to wait before answering each batch
        server.behaviour.hold_after = 2      # answer 2 batches, then hold requests until
        server.behaviour.release.set()       # ... this is set (to kill a client mid-run)
        server.behaviour.omit_attribute = "x"  # results leave out attribute x (a bad server)
        server.stop()                        # held and new requests: connection dropped
        ... server.url, server.requests, server.shot_ids, server.sessions,
        server.recorded.attributes (the ``attributes`` field of each valid request),
        server.recorded.image_sha256 (the digest of every JPEG answered) ...

Run it by hand with ``python tests/fake_analysis_server.py --port 8000 --token secret``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import io
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.responses import JSONResponse
from PIL import Image
from pydantic import ValidationError

from qwen_server.contract.analysis import AnalyzeBatchRequest, ShotIn
from qwen_server.contract.vocabulary import (
    DEFAULT_VOCABULARY,
    EVIDENCE_CHANNELS,
    Vocabulary,
    VocabularyError,
    resolve_requested,
)

MODEL = "fake-qwen/deterministic-v1"


@dataclass
class Behaviour:
    """How the server misbehaves; counters decrement as they are used."""

    fail_503: int = 0
    retry_after: float | None = 0.1
    fail_429: int = 0
    drop: int = 0
    always_401: bool = False
    always_fail: bool = False
    delay: float = 0.0
    hold_after: int | None = None  # after this many answered batches, hold requests ...
    release: threading.Event = field(default_factory=threading.Event)  # ... until this is set
    omit_attribute: str | None = None  # results leave this attribute out (breaks the contract)


@dataclass
class Recorded:
    """What the server saw."""

    requests: int = 0
    answered: int = 0
    shot_ids: list[int] = field(default_factory=list)
    arrivals: list[list[int]] = field(default_factory=list)  # shot ids of each valid request
    sessions: dict[str, list[int]] = field(default_factory=dict)
    titles: set[str] = field(default_factory=set)
    images_per_shot: list[int] = field(default_factory=list)
    auth_headers: list[str | None] = field(default_factory=list)
    attributes: list[Any] = field(default_factory=list)  # the body's ``attributes``, per request
    image_sha256: set[str] = field(default_factory=set)  # every JPEG received (decoded base64)


def _score(*parts: object) -> float:
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return round(int.from_bytes(digest[:4], "big") / 2**32, 4)


def _mean_luma(images: list[str]) -> float:
    values = []
    for b64 in images:
        data = base64.b64decode(b64.split(",", 1)[-1])
        with Image.open(io.BytesIO(data)) as im:
            gray = im.convert("L")
            hist = gray.histogram()
            total = sum(hist)
            values.append(sum(i * n for i, n in enumerate(hist)) / max(1, total) / 255.0)
    return sum(values) / len(values)


def _evidence(channel: str | None, has_audio: bool) -> list[str]:
    """The evidence list of one attribute, in the real server's form (``visual:<channel>``,
    ``audio:<channel>``; empty for a model-only attribute)."""
    if channel is None:
        return []
    kinds = EVIDENCE_CHANNELS[channel].split(":", 1)[0]
    found = []
    if "visual" in kinds:
        found.append(f"visual:{channel}")
    if "audio" in kinds and has_audio:
        found.append(f"audio:{channel}")
    return found


def analyse_shot(
    shot: ShotIn, vocabulary: Vocabulary = DEFAULT_VOCABULARY, batch_size: int = 1
) -> dict[str, Any]:
    """Deterministic result for one shot, computed only from its content, scored on exactly
    the attributes of ``vocabulary`` in its order (``batch_size``: the shots of its request,
    reported in ``generation``)."""
    luma = _mean_luma(shot.images)
    feats = shot.audio_features
    if feats is None or feats.rms_energy_mean is None:
        audio_class = "unknown"
    elif feats.rms_energy_mean < 1e-3:
        audio_class = "silence"
    elif (feats.zero_crossing_rate_mean or 0.0) > 0.2:
        audio_class = "ambience"
    else:
        audio_class = "music"
    key = (shot.shot_id, shot.start_time, len(shot.images), round(luma, 4), audio_class)
    attrs = {name: _score(name, *key) for name in vocabulary.names}
    if "darkness" in attrs:
        attrs["darkness"] = round(1.0 - luma, 4)
    has_audio = feats is not None
    audio = None
    if feats is not None:
        audio = {
            "audio_class": audio_class,
            "loudness": min(1.0, round((feats.rms_energy_mean or 0.0) * 4, 4)),
            "brightness": _score("brightness", *key),
            "noisiness": min(1.0, round((feats.zero_crossing_rate_mean or 0.0) * 2, 4)),
            "summary": f"{audio_class} audio",
        }
    measured = {
        "luminance": round(luma, 4),
        "darkness": round(1.0 - luma, 4),
        "motion": _score("motion", *key),
        "contrast": _score("contrast", *key),
        "saturation": _score("saturation", *key),
    }
    return {
        "shot_id": shot.shot_id,
        "caption": f"shot {shot.shot_id}: {len(shot.images)} frames, mean luma {luma:.3f}",
        "attributes": attrs,
        "model_attributes": dict(attrs),
        "evidence": {a.name: _evidence(a.evidence, has_audio) for a in vocabulary.attributes},
        "measured": measured,
        "audio": audio,
        "timings_ms": {"decode_ms": 0.0, "queue_ms": 0.0, "preprocess_ms": 0.0, "generate_ms": 0.0},
        "generation": {
            "batch_size": batch_size,
            "new_tokens": 48,
            "prompt_tokens": 120 + 64 * len(shot.images),
        },
        "audio_class": audio_class,
        "start_time": shot.start_time,
        "end_time": shot.end_time,
        "duration": shot.duration,
        "model": MODEL,
    }


class FakeAnalysisServer:
    """The app plus a uvicorn server in a background thread (context manager)."""

    def __init__(
        self,
        token: str = "test-token",
        host: str = "127.0.0.1",
        port: int = 0,
        vocabulary: Vocabulary = DEFAULT_VOCABULARY,
    ) -> None:
        self.token = token
        self.vocabulary = vocabulary
        self.behaviour = Behaviour()
        self.recorded = Recorded()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self.host, self.port = self._sock.getsockname()[:2]
        self.app = self._build_app()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL of the server."""
        return f"http://{self.host}:{self.port}"

    @property
    def requests(self) -> int:
        """POST /analyze_batch requests received (including failed ones)."""
        return self.recorded.requests

    @property
    def shot_ids(self) -> list[int]:
        """Shot ids of every successfully answered batch, in arrival order."""
        return list(self.recorded.shot_ids)

    def _take(self, name: str) -> bool:
        with self._lock:
            left = getattr(self.behaviour, name)
            if left > 0:
                setattr(self.behaviour, name, left - 1)
                return True
            return False

    def _build_app(self) -> Any:
        app = FastAPI(title="fake analysis server")

        def auth(authorization: str | None = Header(default=None)) -> None:
            self.recorded.auth_headers.append(authorization)
            if self.behaviour.always_401 or authorization != f"Bearer {self.token}":
                raise HTTPException(
                    status_code=401,
                    detail="missing or invalid bearer token",
                    headers={"WWW-Authenticate": "Bearer"},
                )

        @app.get("/health")
        def health() -> dict[str, Any]:
            return {
                "status": "ok",
                "model": MODEL,
                "version": "test",
                "device": "cpu",
                "gpu_count": 0,
                "queue_depth": 0,
            }

        @app.get("/sessions", dependencies=[Depends(auth)])
        def sessions() -> dict[str, Any]:
            return {
                "sessions": [
                    {"session_id": k, "shots": len(v)} for k, v in self.recorded.sessions.items()
                ]
            }

        @app.post("/analyze_batch", dependencies=[Depends(auth)])
        async def analyze_batch(request: Request) -> Any:
            raw = await request.json()
            try:
                body = AnalyzeBatchRequest.model_validate(raw)
            except ValidationError as exc:
                return JSONResponse(
                    {"detail": exc.errors(include_url=False, include_context=False)},
                    status_code=422,
                )
            try:
                vocabularies = self._vocabularies(raw)
            except VocabularyError as exc:
                return JSONResponse({"detail": str(exc)}, status_code=422)
            with self._lock:
                self.recorded.attributes.append(raw.get("attributes"))
                self.recorded.arrivals.append([s.shot_id for s in body.shots])
            if self.behaviour.delay:
                await asyncio.sleep(self.behaviour.delay)
            hold = self.behaviour.hold_after
            if hold is not None and self.recorded.answered >= hold:
                while not self.behaviour.release.is_set():
                    await asyncio.sleep(0.02)
                if self._stopping.is_set():  # stopped while held: the batch dies with it
                    raise ConnectionAbortedError("server stopped")
            if self.behaviour.always_fail:
                return JSONResponse({"detail": "model broken"}, status_code=503)
            if self._take("fail_503"):
                headers = {}
                if self.behaviour.retry_after is not None:
                    headers["Retry-After"] = str(self.behaviour.retry_after)
                return JSONResponse({"detail": "busy"}, status_code=503, headers=headers)
            if self._take("fail_429"):
                return JSONResponse(
                    {"detail": "slow down"}, status_code=429, headers={"Retry-After": "0.1"}
                )
            n = len(body.shots)
            results = [analyse_shot(s, v, n) for s, v in zip(body.shots, vocabularies, strict=True)]
            if self.behaviour.omit_attribute is not None:
                for r in results:
                    r["attributes"].pop(self.behaviour.omit_attribute, None)
            with self._lock:
                self.recorded.answered += 1
                ids = [s.shot_id for s in body.shots]
                self.recorded.shot_ids.extend(ids)
                self.recorded.images_per_shot.extend(len(s.images) for s in body.shots)
                self.recorded.image_sha256.update(
                    hashlib.sha256(base64.b64decode(image.split(",", 1)[-1])).hexdigest()
                    for s in body.shots
                    for image in s.images
                )
                if body.session_id:
                    self.recorded.sessions.setdefault(body.session_id, []).extend(ids)
                if body.title:
                    self.recorded.titles.add(body.title)
            return {
                "results": results,
                "session_id": body.session_id,
                "model": MODEL,
                "count": len(results),
                "elapsed_ms": 1.0,
            }

        async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if self._stopping.is_set():
                # Going away, like a killed server: nothing more is answered (a keep-alive
                # connection could otherwise still carry a request during the shutdown).
                raise ConnectionAbortedError("server stopped")
            if scope["type"] == "http" and scope["path"] == "/analyze_batch":
                with self._lock:
                    self.recorded.requests += 1
                if self._take("drop"):
                    # Start a response, then fail: uvicorn closes the connection mid-body.
                    await send(
                        {
                            "type": "http.response.start",
                            "status": 200,
                            "headers": [(b"content-length", b"1000")],
                        }
                    )
                    await send({"type": "http.response.body", "body": b'{"res', "more_body": True})
                    raise ConnectionAbortedError("dropped on purpose")
            await app(scope, receive, send)

        return asgi

    def _vocabularies(self, raw: dict[str, Any]) -> list[Vocabulary]:
        """The vocabulary of each shot of a valid request: the shot's own ``attributes``, else
        the body's, else the server's, resolved like the real server does (VocabularyError
        naming the item, e.g. ``attributes[1]``, for a name the server does not know)."""
        body = raw.get("attributes")
        default = (
            self.vocabulary
            if body is None
            else resolve_requested(body, self.vocabulary, "attributes")
        )
        out = []
        for i, shot in enumerate(raw["shots"]):
            own = shot.get("attributes")
            if own is None:
                out.append(default)
            else:
                out.append(resolve_requested(own, self.vocabulary, f"shots[{i}].attributes"))
        return out

    def start(self) -> FakeAnalysisServer:
        """Serve in a background thread; returns when the server accepts connections."""
        config = uvicorn.Config(self.app, log_level="critical", lifespan="off", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("fake analysis server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        """Shut the server down like a server going away: held and new requests get their
        connection dropped, and connections are refused afterwards."""
        self._stopping.set()
        self.behaviour.release.set()  # held requests must not block the shutdown
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._sock.close()

    def __enter__(self) -> FakeAnalysisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (for "unreachable server" tests)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--token", default="test-token")
    ns = parser.parse_args()
    srv = FakeAnalysisServer(token=ns.token, port=ns.port).start()
    print(f"serving on {srv.url}")
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        srv.stop()
