"""`arcpoint serve`: the router, outcomes, telemetry and agents over HTTP.

One service, one SQLite file: an ASGI app (FastAPI under uvicorn) whose routing path never
waits on the database, nor on a model (advisory escalations, the default, are asked after the
answer; in override mode at most the escalation deadline). Decisions are written by a
bounded background writer in a worker process of its own (`decision_process.py`; the thread
writer of `writer.py` for an in-memory database), outcomes are acknowledged only once committed,
monitors run on a schedule inside the service (`monitors.py`), and `/` serves an operator
dashboard from files shipped in this package (`static/`).
"""
