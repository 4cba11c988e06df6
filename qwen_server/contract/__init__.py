"""The HTTP contract shared by server and client.

``constants`` is dependency-free (standard library only) so the CPU-only client can import it
without pydantic, torch or transformers; the pydantic models live beside it.
"""
