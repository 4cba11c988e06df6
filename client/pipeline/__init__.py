"""A run of the client: the stages and how they overlap.

::

    decode thread:  demux+decode video (FFmpeg threads) -> detect cuts -> close shots
                         |  (bounded queue of shots in film order; blocks when full)
    worker pool:    JPEG encoding + librosa features of each closed shot
    audio thread:   demux+decode+resample audio, paced to stay near the video position
    main thread:    takes prepared shots in order -> batches of N ->
    posting pool:   K batches in flight over the servers -> results appended to shots.jsonl

Memory is bounded whatever the film's length: the decode thread holds a few frames and the
candidates of the open shot (and of a closed shot held back until the next one has lasted the
minimum shot length, see ``client.media.assembly.ShotAssembler``), the queue holds at most
``queue_size`` prepared shots, at most K batches are in flight, and decoded audio is released as
soon as no pending shot needs it.

Resume: shots already in ``shots.jsonl`` are still detected (the decode pass is deterministic,
so shot ids are stable) but are not encoded, analysed or written again.

Modules: ``source`` (``ShotSource``: the decode thread, the worker pool and the audio thread,
yielding ``PreparedShot`` in film order), ``sinks`` (where prepared shots go: ``FramesWriter``
for ``shots``, ``Poster`` for ``analyze``, both writing through ``Outputs``) and ``run``
(``Run``: resume, one source into one sink, the final files and the ``RunReport``);
``chunked`` (``ChunkedShotSource``: the same shots decoded by several worker processes, each
running ``chunk_worker`` over a chunk of the film, stitched by ``stitch``; ``--workers N``).
"""
