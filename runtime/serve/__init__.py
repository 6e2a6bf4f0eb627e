"""``camrt serve``: explanations over HTTP, the masked passes of all clients' images batched by one engine loop.

``batcher.py`` owns the engine thread and the queue that feeds it (dynamic batching), ``inputs.py`` reads and
checks an upload and its fields, ``answers.py`` turns a result into JSON, ``metrics.py`` holds the Prometheus
metrics, ``app.py`` the FastAPI routes, ``page/`` the page served at ``/``, and ``local.py`` runs a server in a
child process with a small client (tests, benchmark). Needs the ``serve`` extra
(FastAPI, uvicorn, python-multipart, prometheus-client); imports no torch.
"""
