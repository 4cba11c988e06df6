"""Settings precedence and errors, constant-time auth, and frame decoding limits."""

from __future__ import annotations

import base64
import io
import zlib

import pytest
from PIL import Image

from qwen_server.analysis.images import decode_image
from qwen_server.config import load_settings
from qwen_server.errors import ConfigError, InvalidInput, Unauthorized
from qwen_server.http.auth import ApiKeyVerifier
from tests.conftest import REPO_ROOT
from tests.payloads import image_b64

CONFIG = REPO_ROOT / "config.yaml"


def test_repo_config_loads_with_documented_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("QWEN_MODEL__NAME", "QWEN_SERVER_API_KEYS", "NEBIUS_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    s = load_settings(CONFIG)
    assert s.model.name == "Qwen/Qwen2-VL-2B-Instruct"
    assert s.chat.base_url.startswith("https://api.studio.nebius.com")
    assert s.api_keys() == []


def test_every_key_in_config_yaml_is_commented() -> None:
    for line in CONFIG.read_text().splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#") and not stripped.endswith(":"):
            assert "#" in stripped, f"uncommented key: {line}"


def test_precedence_yaml_then_env_then_flags(tmp_path, monkeypatch) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model:\n  name: from/yaml\n  max_new_tokens: 100\nserver:\n  port: 9000\n")
    assert load_settings(cfg).model.name == "from/yaml"
    monkeypatch.setenv("QWEN_MODEL__NAME", "from/env")
    monkeypatch.setenv("QWEN_SERVER__PORT", "9100")
    s = load_settings(cfg)
    assert (s.model.name, s.server.port, s.model.max_new_tokens) == ("from/env", 9100, 100)
    s = load_settings(cfg, model={"name": "from/flag"})
    assert (s.model.name, s.server.port, s.model.max_new_tokens) == ("from/flag", 9100, 100)


@pytest.mark.parametrize(
    ("yaml_text", "key"),
    [
        ("model:\n  placement: everywhere\n", "model.placement"),
        ("server:\n  port: 70000\n", "server.port"),
        ("batching:\n  max_batchsize: 4\n", "batching.max_batchsize"),
        ("fusion:\n  temporal_weight: 0.9\n  audio_weight: 0.9\n", "fusion"),
    ],
)
def test_invalid_value_names_the_key(tmp_path, yaml_text: str, key: str) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml_text)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_settings(cfg)


def test_invalid_env_value_names_the_key(monkeypatch) -> None:
    monkeypatch.setenv("QWEN_BATCHING__MAX_BATCH_SIZE", "lots")
    with pytest.raises(ConfigError, match="batching.max_batch_size"):
        load_settings(CONFIG)


def test_secrets_are_refused_in_yaml(tmp_path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("server_api_keys: hunter2\n")
    with pytest.raises(ConfigError) as info:
        load_settings(cfg)
    assert "hunter2" not in str(info.value)


def test_missing_config_file_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(tmp_path / "nope.yaml")


def test_keys_from_env_and_file_and_never_printed(tmp_path, monkeypatch) -> None:
    keyfile = tmp_path / "keys"
    keyfile.write_text("# rotation\nfile-key-1\n\nfile-key-2\n")
    monkeypatch.setenv("QWEN_SERVER_API_KEYS", "env-a, env-b")
    s = load_settings(CONFIG, server={"api_key_file": str(keyfile)})
    assert s.api_keys() == ["env-a", "env-b", "file-key-1", "file-key-2"]
    assert "env-a" not in repr(s) and "env-a" not in s.model_dump_json()


def test_unreadable_key_file_is_a_config_error(tmp_path) -> None:
    s = load_settings(CONFIG, server={"api_key_file": str(tmp_path / "missing")})
    with pytest.raises(ConfigError, match="server.api_key_file"):
        s.api_keys()


@pytest.mark.parametrize(
    "header",
    [
        None,
        b"",
        b"Bearer",
        b"Bearer ",
        b"Basic dXNlcjpwYXNz",
        b"Bearer wrong",
        b"bearer k\xff\xfe",
        "Bearer k\u00e9y".encode(),
        b"Bearer " + b"x" * 10000,
    ],
)
def test_bad_headers_are_unauthorized(header) -> None:
    v = ApiKeyVerifier(["k1", "k2"])
    with pytest.raises(Unauthorized):
        v.check_header(header)


def test_any_configured_key_is_accepted() -> None:
    v = ApiKeyVerifier(["k1", "k2"])
    v.check_header(b"Bearer k1")
    v.check_header(b"bearer   k2")
    assert v.enabled and not ApiKeyVerifier([]).enabled


def _png_header_only(width: int, height: int) -> str:
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, format="PNG")
    raw = bytearray(buf.getvalue())
    raw[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")  # IHDR width, height
    raw[29:33] = zlib.crc32(bytes(raw[12:29])).to_bytes(4, "big")  # keep the chunk CRC valid
    return base64.b64encode(bytes(raw)).decode()


def test_decode_valid_jpeg_and_png_and_data_url() -> None:
    assert decode_image(image_b64(), max_pixels=10**6, where="s").size == (112, 84)
    png = image_b64(fmt="PNG")
    assert decode_image(png, max_pixels=10**6, where="s").mode == "RGB"
    assert decode_image("data:image/png;base64," + png, max_pixels=10**6, where="s")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("not base64!!", "not valid base64"),
        ("", "empty image"),
        (base64.b64encode(b"GIF89a....").decode(), "not a JPEG or PNG"),
        (image_b64()[: len(image_b64()) // 2 // 4 * 4], "truncated or corrupt JPEG"),
    ],
)
def test_decode_rejects_bad_frames_naming_them(data: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=f"shot 7 image 2: {message}"):
        decode_image(data, max_pixels=10**6, where="shot 7 image 2")


@pytest.mark.parametrize("side", [3_000, 50_000])
def test_decode_refuses_oversized_images_from_the_header(side: int) -> None:
    # Only a header claims these sizes: refusing them must not need the pixels.
    with pytest.raises(InvalidInput, match="max_image_pixels|exceed"):
        decode_image(_png_header_only(side, side), max_pixels=4_000_000, where="s")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_large_frames_are_shrunk_to_what_the_model_uses(fmt: str) -> None:
    img = decode_image(
        image_b64(size=(1920, 1080), fmt=fmt),
        max_pixels=4_000_000,
        where="s",
        keep_pixels=448 * 448,
    )
    assert img.width * img.height <= 448 * 448
    assert abs(img.width / img.height - 1920 / 1080) < 0.02  # aspect ratio kept
    small = decode_image(
        image_b64(size=(112, 84)), max_pixels=10**6, where="s", keep_pixels=448 * 448
    )
    assert small.size == (112, 84)


# --- combinations that cannot work -----------------------------------------------------------


def test_queue_smaller_than_a_request_is_refused_naming_both_keys(monkeypatch) -> None:
    monkeypatch.setenv("QWEN_SERVER__MAX_QUEUED_SHOTS", "10")
    with pytest.raises(ConfigError) as excinfo:
        load_settings(CONFIG, server={"max_shots_per_request": 11})
    message = str(excinfo.value)
    assert "server.max_queued_shots (env QWEN_SERVER__MAX_QUEUED_SHOTS) = 10" in message
    assert "server.max_shots_per_request (env QWEN_SERVER__MAX_SHOTS_PER_REQUEST) = 11" in message
    assert "(root)" not in message
    assert load_settings(CONFIG, server={"max_shots_per_request": 10}).server.max_queued_shots == 10


def test_qwen_server_exits_2_on_an_impossible_combination(tmp_path) -> None:
    import os
    import subprocess
    import sys

    env = {
        **os.environ,
        "QWEN_SERVER__MAX_QUEUED_SHOTS": "8",
        "QWEN_SERVER_API_KEYS": "k",
        "QWEN_CONFIG": str(CONFIG),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "qwen_server", "--check-config"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "QWEN_SERVER__MAX_SHOTS_PER_REQUEST" in proc.stderr


@pytest.mark.parametrize(("key", "value"), [("max_size_mb", 0), ("reserve_mb", -1)])
def test_store_space_settings_are_checked(key: str, value: float) -> None:
    with pytest.raises(ConfigError, match=f"store.{key}"):
        load_settings(CONFIG, store={key: value})


def test_load_truncated_images_is_turned_off_before_decoding() -> None:
    from PIL import ImageFile

    cut = image_b64(size=(640, 480))
    cut = cut[: len(cut) // 2 // 4 * 4]
    ImageFile.LOAD_TRUNCATED_IMAGES = True  # as a library might set it process-wide
    try:
        with pytest.raises(InvalidInput, match="truncated"):
            decode_image(cut, max_pixels=10**6, where="s")
        assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = False
