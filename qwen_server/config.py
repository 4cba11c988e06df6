"""Typed settings for the analysis server.

Precedence, lowest to highest: built-in defaults, ``config.yaml``, environment variables
(prefix ``QWEN_``, nested keys joined by ``__``, e.g. ``QWEN_MODEL__NAME``), then ``qwen-server``
command-line flags. Secrets (API keys, the chat provider key) only ever come from the
environment or from a key file, and are held as ``SecretStr`` so they never print.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from .contract.vocabulary import (
    DEFAULT_VOCABULARY,
    Vocabulary,
    VocabularyError,
    load_vocabulary_file,
)
from .errors import ConfigError

DEFAULT_CONFIG_FILE = "config.yaml"

# The package each model.quantization mode loads through (transformers' BitsAndBytesConfig).
QUANTIZATION_PACKAGES: dict[str, str] = {"int8": "bitsandbytes", "nf4": "bitsandbytes"}

# With batching.max_batch_size "auto", placement plans memory for this many shots; the start-up
# probe then picks the real size from what is left.
AUTO_PLANNED_BATCH = 8
MAX_BATCH_LIMIT = 512


class _Section(BaseModel):
    # Unknown keys are almost always typos ("max_batchsize"): refuse them by name.
    model_config = ConfigDict(extra="forbid")


class ServerSettings(_Section):
    """HTTP front: bind address, limits on what a caller may send, auth switches."""

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    api_key_file: Path | None = None
    insecure_no_auth: bool = False
    public_docs: bool = False
    public_metrics: bool = False
    max_body_mb: float = Field(64.0, gt=0, le=4096)
    max_shots_per_request: int = Field(64, ge=1, le=10_000)
    max_images_per_shot: int = Field(8, ge=1, le=64)
    max_image_pixels: int = Field(4_000_000, ge=1024)
    # Per-shot video clips (``video`` instead of ``images``): the decoded clip's size and its
    # length are bounded so one shot cannot make the server decode a film.
    max_clip_mb: float = Field(16.0, gt=0, le=1024)
    max_clip_seconds: float = Field(30.0, gt=0, le=3600)
    # A film uploaded to POST /jobs (server.max_body_mb does not apply there): counted while
    # streaming to disk, 413 and the partial file removed past it.
    max_upload_mb: float = Field(16384.0, gt=0, le=16_777_216)
    max_queued_shots: int = Field(1024, ge=1)
    # Admission under overload: a request that finds the queue full waits in a first-come-
    # first-served line (frames not yet decoded) for up to admission_wait_s, then gets 503 +
    # Retry-After; at most max_waiting_requests wait at once (more get 503 at once).
    admission_wait_s: float = Field(10.0, ge=0, le=600)
    max_waiting_requests: int = Field(64, ge=0, le=100_000)
    decode_workers: int = Field(4, ge=1, le=64)
    # Shot preparation (image processor, prompt, token ids) for the model: its threads (0: auto,
    # half the cores, 2 to 8) and each one's PyTorch intra-op threads (0: auto, the cores
    # divided among them, at least 1; engine/thread_budget.py).
    prepare_workers: int = Field(0, ge=0, le=256)
    prepare_torch_threads: int = Field(0, ge=0, le=256)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    shutdown_timeout_s: float = Field(60.0, ge=0)
    # Connections cannot be held open for free (see qwen_server/serving.py): request headers
    # must be complete within header_timeout_s of the connection opening or of the previous
    # response; a silent kept-alive connection closes after keepalive_timeout_s; past
    # max_connections the oldest idle connection is closed to make room.
    header_timeout_s: float = Field(10.0, gt=0, le=3600)
    keepalive_timeout_s: float = Field(5.0, gt=0, le=3600)
    max_connections: int = Field(512, ge=1, le=1_000_000)


class ModelSettings(_Section):
    """Which checkpoint to load and how to place it on the hardware."""

    name: str = "Qwen/Qwen2-VL-2B-Instruct"
    path: Path | None = None
    revision: str | None = None
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    placement: Literal["auto", "shard", "replicate"] = "auto"
    device: Literal["auto", "cuda", "cpu"] = "auto"
    attn_implementation: Literal["auto", "sdpa", "eager", "flash_attention_2"] = "auto"
    min_pixels: int = Field(56 * 56, ge=28 * 28)
    max_pixels: int = Field(448 * 448, ge=28 * 28)
    max_new_tokens: int = Field(160, ge=16, le=2048)
    caption_max_chars: int = Field(200, ge=20, le=2000)
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    local_files_only: bool = False
    # How a shot's frames reach the model: "video" (one clip; Qwen2-VL fuses frame pairs in its
    # temporal patches, ~40% fewer visual tokens for 5 frames: the fast default) or "images"
    # (one image per frame: every frame seen on its own, slower).
    frames_as: Literal["video", "images"] = "video"
    # Decode with a static KV cache and a torch.compile'd forward (engine/compiled_decode.py):
    # the first batches compile (minutes on a GPU), later ones decode faster. Off by default.
    compile: bool = False
    # Weight quantization at load time through transformers' bitsandbytes config: int8
    # (LLM.int8, ~1 byte a weight) or nf4 (4-bit NormalFloat, ~0.56 byte), on CUDA or CPU.
    quantization: Literal["none", "int8", "nf4"] = "none"
    # Answer-grammar masks: threads that fill one replica's bitmask (0: half the cores, at most
    # 8) and whether the next step's accept + fill runs beside the forward pass (same answers).
    grammar_threads: int = Field(0, ge=0, le=64)
    grammar_overlap: bool = True
    # PyTorch intra-op threads of each replica's generate thread (0: auto; a CPU replica gets
    # its share of the cores, a GPU replica a few: engine/thread_budget.py).
    generate_threads: int = Field(0, ge=0, le=1024)

    @model_validator(mode="after")
    def _pixels_ordered(self) -> ModelSettings:
        if self.min_pixels > self.max_pixels:
            raise ValueError("min_pixels must not exceed max_pixels")
        return self

    @field_validator("quantization")
    @classmethod
    def _quantization_installed(cls, value: str) -> str:
        # Checked with the settings so a missing package stops start-up (exit 2) and
        # --check-config, before minutes of loading; find_spec imports nothing.
        package = QUANTIZATION_PACKAGES.get(value)
        if package is not None and importlib.util.find_spec(package) is None:
            raise ValueError(
                f"'{value}' needs the {package} package, which is not installed "
                f"(pip install {package}), or set model.quantization: none"
            )
        return value

    @property
    def source(self) -> str:
        """What ``from_pretrained`` is given: the local path when set, else the hub id."""
        return str(self.path) if self.path else self.name


class BatchingSettings(_Section):
    """How concurrent requests are merged into GPU batches."""

    # Shots per generate call, or "auto": measured at start-up (engine/memory_probe.py) from
    # one worst-case batch and the memory left free. The default stays a fixed 32, so existing
    # configurations behave as before and CPU start-up runs no probe.
    max_batch_size: int | Literal["auto"] = 32
    max_wait_ms: float = Field(15.0, ge=0, le=5000)
    # After an out-of-memory batch the engine-wide batch cap drops (engine/batch_cap.py); this
    # many batches in a row must then succeed at the cap before it is raised by a quarter.
    cap_recovery_batches: int = Field(16, ge=1, le=100_000)
    # When more shots wait than fit a batch, take shots of similar prompt length together (less
    # left padding), never starving one (engine/length_buckets.py); false: oldest first.
    bucket_by_length: bool = True

    @field_validator("max_batch_size", mode="before")
    @classmethod
    def _int_or_auto(cls, value: Any) -> int | str:
        # One clear message instead of one per member of the union.
        if isinstance(value, str) and value.strip().lower() == "auto":
            return "auto"
        number = 0  # anything but an int or a string of digits: refused below
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, str) and value.strip().isdigit():
            number = int(value)
        if not 1 <= number <= MAX_BATCH_LIMIT:
            raise ValueError(f"must be 'auto' or an integer from 1 to {MAX_BATCH_LIMIT}")
        return number

    @property
    def planned_batch_size(self) -> int:
        """The batch size memory is planned for before the model is loaded (placement's
        activation reserve): the configured size, or ``AUTO_PLANNED_BATCH`` for "auto"."""
        return AUTO_PLANNED_BATCH if self.max_batch_size == "auto" else self.max_batch_size


class FusionSettings(_Section):
    """Weights that blend the model's scores with measured visual signals and audio cues."""

    temporal_weight: float = Field(0.3, ge=0.0, le=1.0)
    audio_weight: float = Field(0.25, ge=0.0, le=1.0)
    measured_weight: float = Field(0.7, ge=0.0, le=1.0)
    enable_audio_fusion: bool = True

    @model_validator(mode="after")
    def _weights_leave_room_for_model(self) -> FusionSettings:
        if self.temporal_weight + self.audio_weight > 1.0:
            raise ValueError("temporal_weight + audio_weight must not exceed 1.0")
        return self


class AnalysisSettings(_Section):
    """What every shot is scored on: the attribute vocabulary."""

    # A YAML vocabulary file (format: contract/vocabulary.py, README "Attributes"); None: the
    # six v1 attributes with their v1 fusion. Read and checked when the settings are built, so a
    # bad file stops start-up (and --check-config) naming the file, the attribute and the problem.
    attributes_file: Path | None = None
    _vocabulary: Vocabulary = PrivateAttr(default=DEFAULT_VOCABULARY)
    _ignored_keys: list[str] = PrivateAttr(default_factory=list)

    @field_validator("attributes_file")
    @classmethod
    def _file_loads(cls, value: Path | None) -> Path | None:
        if value is not None:
            try:
                load_vocabulary_file(value)
            except VocabularyError as exc:
                raise ValueError(str(exc)) from None
        return value

    def model_post_init(self, context: Any) -> None:
        if self.attributes_file is not None:
            self._vocabulary, self._ignored_keys = load_vocabulary_file(self.attributes_file)

    @property
    def vocabulary(self) -> Vocabulary:
        """The server's vocabulary: the file's attributes, else ``DEFAULT_VOCABULARY``."""
        return self._vocabulary

    @property
    def ignored_keys(self) -> list[str]:
        """Top-level keys of the attributes file other than ``attributes`` (ignored)."""
        return list(self._ignored_keys)


class StoreSettings(_Section):
    """Where film sessions are kept, and how much disk they may take."""

    path: Path = Path("var/qwen_server.sqlite3")
    # Cap on the database size (None: the disk is the limit). Past it, results are still
    # returned but not stored (stored: false), exactly as on a full disk.
    max_size_mb: float | None = Field(None, gt=0, le=16_777_216)
    # Spare file kept beside the database and given up when the disk is full, so that
    # DELETE /sessions/{id} can still free space (0: no spare).
    reserve_mb: float = Field(8.0, ge=0, le=4096)


class JobsSettings(_Section):
    """Server-side film jobs (``POST /jobs``): where their files live, which server paths a
    job may name, how much disk they may take and how many decode at once."""

    # Uploads and results folders, one folder per job (None: ``jobs`` beside store.path).
    dir: Path | None = None
    # Folders a path job may name (realpath inside one of them); empty: path jobs are 403.
    media_roots: list[Path] = Field(default_factory=list)
    # Uploads plus results on disk under ``dir``; a job that would pass it is 507.
    max_disk_gb: float = Field(100.0, gt=0, le=1_048_576)
    # Decode worker processes per job ("auto": the cores minus what generation needs, >= 1).
    decode_workers: int | Literal["auto"] = "auto"
    keep_uploads: bool = False  # keep an uploaded film once its job ends (done/failed/cancelled)
    max_running: int = Field(1, ge=1, le=64)  # jobs decoding at once; the others wait queued
    # Shots per in-process batch and batches in flight (the analyze CLI's --batch-size and
    # --in-flight): a batch is the unit stored in the session and in shots.jsonl.
    batch_size: int = Field(8, ge=1, le=512)
    in_flight: int = Field(2, ge=1, le=64)

    @field_validator("decode_workers")
    @classmethod
    def _workers(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError("decode_workers must be >= 1 or 'auto'")
        return value

    def folder(self, store_path: Path) -> Path:
        """The jobs folder: ``dir``, or ``jobs`` beside the session database."""
        return self.dir if self.dir is not None else Path(store_path).parent / "jobs"

    def workers(self, generation_threads: int = 2) -> int:
        """Decode workers: the setting, or with "auto" the cores minus ``generation_threads``
        (what feeding the model needs), at least 1."""
        if isinstance(self.decode_workers, int):
            return self.decode_workers
        return max(1, (os.cpu_count() or 1) - generation_threads)


class ChatSettings(_Section):
    """The OpenAI-compatible chat provider (Nebius AI Studio by default)."""

    base_url: str = "https://api.studio.nebius.com/v1/"
    model: str = "openai/gpt-oss-120b"
    # Total time one answer may take (request to last byte, retry included, streamed or not);
    # past it /chat is 504, or a started stream ends with an error event carrying 504.
    timeout_s: float = Field(60.0, gt=0, le=600)
    max_context_tokens: int = Field(6000, ge=500, le=200_000)
    max_answer_tokens: int = Field(800, ge=16, le=16_000)
    temperature: float = Field(0.2, ge=0.0, le=2.0)


class Settings(BaseSettings):
    """All server settings; see ``config.yaml`` for what each key means."""

    model_config = SettingsConfigDict(
        env_prefix="QWEN_",
        env_nested_delimiter="__",
        extra="forbid",
        case_sensitive=False,
    )

    server: ServerSettings = ServerSettings()
    model: ModelSettings = ModelSettings()
    batching: BatchingSettings = BatchingSettings()
    fusion: FusionSettings = FusionSettings()
    analysis: AnalysisSettings = AnalysisSettings()
    store: StoreSettings = StoreSettings()
    jobs: JobsSettings = JobsSettings()
    chat: ChatSettings = ChatSettings()

    # Secrets: environment only (QWEN_SERVER_API_KEYS, NEBIUS_API_KEY), never config.yaml.
    server_api_keys: SecretStr | None = Field(default=None, exclude=True)
    nebius_api_key: SecretStr | None = Field(
        default=None, validation_alias="NEBIUS_API_KEY", exclude=True
    )

    # Set by load_settings before construction; not a setting itself.
    _yaml_file: Path | None = None

    @model_validator(mode="after")
    def _combinations_that_can_work(self) -> Settings:
        """Refuse combinations of keys that are each valid but cannot work together, naming
        every key involved (as a config key and as its environment variable)."""
        server = self.server
        if server.max_queued_shots < server.max_shots_per_request:
            raise ValueError(
                f"server.max_queued_shots (env QWEN_SERVER__MAX_QUEUED_SHOTS) = "
                f"{server.max_queued_shots} is below server.max_shots_per_request (env "
                f"QWEN_SERVER__MAX_SHOTS_PER_REQUEST) = {server.max_shots_per_request}: a request "
                "of that many shots could never be queued and would get 503 forever; raise "
                "max_queued_shots or lower max_shots_per_request"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        yaml_file = _CURRENT_YAML.get("path")
        if yaml_file is not None:
            sources.append(_SecretFreeYaml(settings_cls, yaml_file=yaml_file))
        return tuple(sources)

    def api_keys(self) -> list[str]:
        """Every accepted bearer key: ``QWEN_SERVER_API_KEYS`` plus the key file's lines."""
        keys: list[str] = []
        if self.server_api_keys is not None:
            keys += [k.strip() for k in self.server_api_keys.get_secret_value().split(",")]
        if self.server.api_key_file is not None:
            try:
                text = self.server.api_key_file.read_text(encoding="utf-8")
            except OSError as exc:
                raise ConfigError(
                    f"server.api_key_file: cannot read the key file ({exc.strerror})"
                ) from None
            keys += [line.strip() for line in text.splitlines() if not line.startswith("#")]
        return [k for k in keys if k]


# The YAML path travels to settings_customise_sources through this holder because pydantic
# settings sources are chosen per class, not per instance.
_CURRENT_YAML: dict[str, Path | None] = {"path": None}

_SECRET_KEYS = {"server_api_keys", "nebius_api_key", "NEBIUS_API_KEY"}


class _SecretFreeYaml(YamlConfigSettingsSource):
    """config.yaml source that refuses secrets: keys belong in the environment or a key file."""

    def __call__(self) -> dict[str, Any]:
        data = super().__call__()
        for key in _SECRET_KEYS & set(data):
            raise ConfigError(
                f"{key}: secrets must not be put in the config file; "
                "use the environment (QWEN_SERVER_API_KEYS, NEBIUS_API_KEY) or server.api_key_file"
            )
        return data


def _format_validation_error(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        if not err["loc"]:  # a cross-field check: its message names its keys itself
            lines.append(str(err["msg"]).removeprefix("Value error, "))
            continue
        key = ".".join(str(p) for p in err["loc"])
        env = "QWEN_" + key.upper().replace(".", "__")
        lines.append(f"{key} (env {env}): {str(err['msg']).removeprefix('Value error, ')}")
    return "invalid settings: " + "; ".join(lines)


def load_settings(config_file: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Build the settings from defaults, the YAML file, the environment and ``overrides``.

    ``config_file`` defaults to ``$QWEN_CONFIG`` or ``./config.yaml`` when present. ``overrides``
    are nested dicts as the CLI produces them (``{"model": {"name": ...}}``) and win over all.
    Raises ConfigError with a message naming the offending key.
    """
    if config_file is None:
        env_path = os.environ.get("QWEN_CONFIG")
        if env_path:
            config_file = env_path
        elif Path(DEFAULT_CONFIG_FILE).is_file():
            config_file = DEFAULT_CONFIG_FILE
    path = Path(config_file) if config_file is not None else None
    if path is not None and not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    _CURRENT_YAML["path"] = path
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc)) from None
    except ValueError as exc:  # YAML syntax errors surface as ValueError subclasses
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    finally:
        _CURRENT_YAML["path"] = None
