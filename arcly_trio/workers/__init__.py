"""Protocol workers: the trio adapters that serve the sans-IO protocol cores on sockets.

Each worker is a :class:`~arcly_trio.kernel.engine.ProtocolWorker`: the engine starts it with
``nursery.start(worker.serve, engine)``; it binds its port, reports it through
``task_status.started`` and serves until cancelled. RTMP is :mod:`.rtmp`, HTTP (HTTP-FLV,
WebSocket-FLV, HLS, the API) is :mod:`.http`. Every listening worker takes its listener's
options as one :class:`~.serving.Listener` and serves its connections through one
:class:`~.serving.ConnectionRunner` (:mod:`.serving`).
"""
