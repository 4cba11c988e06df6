"""Media on the client: probing a film, the single decode pass (cut detection, shot assembly,
frame sampling), JPEG frames, the audio track and its per-shot features (spectral and beats in
numpy, speech with silero-vad on onnxruntime, BS.1770 loudness with pyloudnorm's K-weighting)."""
