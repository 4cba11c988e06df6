"""Media on the client: probing a film, the single decode pass (cut detection, shot assembly,
frame sampling), JPEG frames, the audio track and its per-shot features (spectral and beats in
numpy/scipy, speech with silero-vad on onnxruntime, loudness with pyloudnorm)."""
