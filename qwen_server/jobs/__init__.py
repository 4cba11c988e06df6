"""Server-side film jobs (``POST /jobs``): a film uploaded or named by path runs through the
client's own pipeline on whichever node claims it, its shots analysed in-process, its results
stored in a session and in a results folder like ``qwen-client analyze`` writes.

Modules: ``models`` (JobOptions, JobStatus and their mapping onto the client's options),
``intake`` (what a new job must pass: media roots, video probe, disk quota; the streamed
upload), ``multipart`` (a streaming multipart/form-data reader), ``transport`` (the
in-process stand-in for the client's ``ServerPool``), ``progress`` (the client's ``Progress``
interface counting into a job), ``runner`` (``JobManager``: claims from the shared jobs table,
leases, worker threads, cancel, purge, resume), ``status`` (a row as JobStatus), ``events``
(the SSE stream) and ``results_tar`` (the results folder as a tar stream).
"""
