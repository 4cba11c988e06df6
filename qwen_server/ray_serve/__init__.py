"""The server on a Ray Serve cluster: many GPU boxes behind one HTTP entry (``qwen-server --ray``).

The same FastAPI app ``create_app`` builds (auth, validation, routes) is the Serve ingress; the
model engine runs as a deployment of its own, one replica per GPU, autoscaled on queue depth.
The ingress reaches the engine through ``RemoteEngine``, an ``EngineClient`` over a Serve
``DeploymentHandle``, so the routes do not know they are on a cluster.

Modules: ``wire`` (what crosses between replicas), ``engine_deployment`` (the engine replica),
``remote_engine`` (the adapter), ``ingress`` (the FastAPI front), ``application`` (options
from the settings, the bound app, the ``serve run`` builder), ``cluster`` (the command).
Nothing here is imported by the single-box server: ``ray`` is an optional extra.
"""
