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

    # PostgreSQL instead of the SQLite file when set: postgresql://USER@HOST:PORT/DBNAME (env
    # QWEN_STORE__URL), shared by every server that names it. Its password comes from the
    # environment: in the URL only when the URL itself is QWEN_STORE__URL, else
    # QWEN_STORE_PASSWORD, PGPASSWORD or ~/.pgpass; config.yaml refuses a URL with a password.
    # A SecretStr because an environment URL can carry the password: it never prints whole.
    url: SecretStr | None = None
    # PostgreSQL only: connections this server keeps open at most (the routes' thread pool and
    # the jobs share them), and how long a store call waits for a connection or a row lock.
    pool_max_size: int = Field(8, ge=1, le=1000)
    timeout_s: float = Field(30.0, gt=0, le=600)
    # SQLite only (below): the file and its disk limits. With url set they are not used.
    path: Path = Path("var/qwen_server.sqlite3")
    # Cap on the database size (None: the disk is the limit). Past it, results are still
    # returned but not stored (stored: false), exactly as on a full disk.
    max_size_mb: float | None = Field(None, gt=0, le=16_777_216)
    # Spare file kept beside the database and given up when the disk is full, so that
    # DELETE /sessions/{id} can still free space (0: no spare).
    reserve_mb: float = Field(8.0, ge=0, le=4096)

    @field_validator("url", mode="before")
    @classmethod
    def _postgres_only(cls, value: Any) -> Any:
        from .store.urls import is_postgres_url

        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if value is None or (isinstance(value, str) and not value.strip()):
            return None  # QWEN_STORE__URL= (empty) means the SQLite file
        if not isinstance(value, str) or not is_postgres_url(value.strip()):
            raise ValueError(
                "must be a PostgreSQL URL (postgresql://user@host:port/dbname); leave it unset "
                "for the SQLite file at store.path"
            )
        return value.strip()


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
    # This job manager's name in the jobs table (who runs a job; JobStatus.node). None: the
    # host name plus a random suffix per process start. Set a stable one to have a restarted
    # server take its own jobs back at once instead of after their lease.
    node_id: str | None = Field(None, min_length=1, max_length=200)
    # A running job's lease: its node's heartbeat (with the progress save, about once a second)
    # renews it; a job whose lease ran out (its node died) is claimed by another node.
    lease_s: float = Field(15.0, ge=2, le=3600)

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


class RaySettings(_Section):
    """``qwen-server --ray``: the same app on a Ray Serve cluster (qwen_server/ray_serve/).

    The FastAPI app is the Serve ingress; the engine is a deployment of its own, one replica
    per GPU, autoscaled on the requests queued or running per replica. Ignored without --ray.
    """

    # The cluster: None starts a local one in this process (a single box, tests); "auto" joins
    # the cluster that `ray start` started on this node; "ray://head:10001" goes through Ray
    # Client. The Serve HTTP proxy binds server.host:server.port on every node.
    address: str | None = None
    namespace: str = "qwen-server"
    app_name: str = "qwen"
    # Engine replicas: GPUs each ("auto": 1 when the cluster has GPUs, else 0, a CPU replica)
    # and CPUs each (Ray's scheduling unit, not a thread count).
    gpus_per_replica: float | Literal["auto"] = "auto"
    cpus_per_replica: float = Field(1.0, ge=0, le=1024)
    # Autoscaling bounds ("auto" max: the cluster's GPUs / gpus_per_replica when the app starts,
    # min_replicas on a CPU-only cluster) and the replicas started with (None: min_replicas).
    min_replicas: int = Field(1, ge=1, le=100_000)
    max_replicas: int | Literal["auto"] = "auto"
    initial_replicas: int | None = Field(None, ge=1, le=100_000)
    # Autoscaling on queue depth: the requests (queued at the ingress or running) per replica
    # Serve aims at, and how long a need must last before it adds or removes a replica.
    target_ongoing_requests: float = Field(4.0, gt=0, le=100_000)
    upscale_delay_s: float = Field(30.0, ge=0, le=86_400)
    downscale_delay_s: float = Field(600.0, ge=0, le=86_400)
    # Requests one engine replica takes at once ("auto": batching's planned batch size, at least
    # twice target_ongoing_requests); never below the batch size, or batches could not fill.
    max_ongoing_requests: int | Literal["auto"] = "auto"
    # A replica removed (scale-down, redeploy) stops getting requests, finishes those it has
    # and its engine's queue within this, then exits; also the engine's stop(timeout).
    graceful_shutdown_timeout_s: float = Field(60.0, ge=0, le=86_400)
    # Serve calls each engine replica's check_health (raises when the engine failed) this
    # often; a replica failing it, or silent past the timeout, is replaced.
    health_check_period_s: float = Field(10.0, gt=0, le=3600)
    health_check_timeout_s: float = Field(30.0, gt=0, le=3600)
    # The FastAPI front: copies (one per node keeps frames on the node: Serve routes to local
    # replicas first) and requests each takes at once.
    ingress_replicas: int = Field(1, ge=1, le=10_000)
    ingress_max_ongoing_requests: int = Field(256, ge=1, le=100_000)
    # Replicas one analysis is tried on when the replica running it dies (analysis is
    # idempotent); past them the request is 503 + Retry-After, which the client retries.
    retry_attempts: int = Field(3, ge=1, le=100)
    # A local cluster (address None) only: CPUs it may use (None: all) and its object store.
    num_cpus: int | None = Field(None, ge=1, le=100_000)
    object_store_mb: int = Field(512, ge=80, le=1_048_576)
    include_dashboard: bool = False

    def replica_max_ongoing(self, batch_size: int) -> int:
        """Requests one engine replica takes at once: the setting, or with "auto" the batch
        size, at least twice ``target_ongoing_requests`` (so autoscaling has room to see)."""
        if isinstance(self.max_ongoing_requests, int):
            return self.max_ongoing_requests
        return max(batch_size, int(2 * self.target_ongoing_requests + 0.999))


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
    ray: RaySettings = RaySettings()

    # Secrets: environment only (QWEN_SERVER_API_KEYS, NEBIUS_API_KEY), never config.yaml.
    server_api_keys: SecretStr | None = Field(default=None, exclude=True)
    nebius_api_key: SecretStr | None = Field(
        default=None, validation_alias="NEBIUS_API_KEY", exclude=True
    )
    # The PostgreSQL password (QWEN_STORE_PASSWORD), when it is not in an environment store.url.
    store_password: SecretStr | None = Field(default=None, exclude=True)

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

    @model_validator(mode="after")
    def _ray_batches_can_fill(self) -> Settings:
        """An engine replica taking fewer requests than a batch holds would never fill one."""
        ray, batch = self.ray, self.batching.planned_batch_size
        if isinstance(ray.max_ongoing_requests, int) and ray.max_ongoing_requests < batch:
            raise ValueError(
                f"ray.max_ongoing_requests (env QWEN_RAY__MAX_ONGOING_REQUESTS) = "
                f"{ray.max_ongoing_requests} is below batching.max_batch_size (env "
                f"QWEN_BATCHING__MAX_BATCH_SIZE) = {batch}: an engine replica could never fill "
                "a batch; raise it or set it to auto"
            )
        if isinstance(ray.max_replicas, int) and ray.max_replicas < ray.min_replicas:
            raise ValueError(
                f"ray.max_replicas (env QWEN_RAY__MAX_REPLICAS) = {ray.max_replicas} is below "
                f"ray.min_replicas (env QWEN_RAY__MIN_REPLICAS) = {ray.min_replicas}"
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

_SECRET_KEYS = {"server_api_keys", "nebius_api_key", "NEBIUS_API_KEY", "store_password"}


class _SecretFreeYaml(YamlConfigSettingsSource):
    """config.yaml source that refuses secrets: keys belong in the environment or a key file."""

    def __call__(self) -> dict[str, Any]:
        data = super().__call__()
        for key in _SECRET_KEYS & set(data):
            raise ConfigError(
                f"{key}: secrets must not be put in the config file; "
                "use the environment (QWEN_SERVER_API_KEYS, NEBIUS_API_KEY, QWEN_STORE_PASSWORD) "
                "or server.api_key_file"
            )
        _refuse_store_password(data.get("store"))
        return data


def _refuse_store_password(store: Any) -> None:
    """A store.url in config.yaml must not carry a password (the file is shared and committed);
    the message never repeats the URL, which holds it."""
    from .store.urls import has_password

    url = store.get("url") if isinstance(store, dict) else None
    if isinstance(url, str) and has_password(url):
        raise ConfigError(
            "store.url: the database password must not be put in the config file; use "
            "QWEN_STORE_PASSWORD, PGPASSWORD or ~/.pgpass, or give the whole URL in QWEN_STORE__URL"
        )


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
