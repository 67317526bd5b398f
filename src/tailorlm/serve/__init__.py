"""`tailor serve`: an OpenAI-compatible server for one base model and many adapters.

    app.py        the routes, and one request from body to answer
    schemas.py    OpenAI's request and response bodies (strict: unknown fields are refused)
    answers.py    engine results -> completions, chat, stream chunks
    errors.py     OpenAI's error envelope and statuses
    auth.py       the Bearer key on every route but /health; the body-size limit
    scheduler.py  one worker thread; waiting requests of any adapters leave as one batch
    adapters.py   request `model` -> Served; the LRU of resident adapters; alias re-resolution
    metrics.py    Prometheus /metrics
    config.py     ServeConfig: the limits, one field per flag
    engine.py     the one import of the batch engine (SERVE.md's interface)

    from tailorlm.serve.app import create_app     (needs fastapi, uvicorn, prometheus-client:
                                                   the `serve` extra)

docs/serving.md explains how to run it and every choice above.
"""
