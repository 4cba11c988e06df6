"""Media on the client: probing a film, the single decode pass (cut detection, shot assembly,
frame sampling), JPEG frames, the audio track and its librosa features."""
