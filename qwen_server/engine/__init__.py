"""The model engine: Qwen2-VL behind the ``EngineClient`` protocol.

``lifecycle`` (Engine: load, start, stop, admit, analyze, workers) · ``batching`` (queue and
admission) · ``inputs`` (frames and prompt to model inputs) · ``prompts`` · ``generation``
(collate, generate, OOM split) · ``faults`` · ``replicas`` · ``checkpoint`` · ``placement`` ·
``grammar`` · ``output_parsing`` · ``types`` · ``protocol``.
"""
