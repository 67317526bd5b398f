"""`tailor serve`: one base model and its adapters behind an OpenAI-compatible API."""

from __future__ import annotations

import ipaddress
import logging
import os
import sys


def add_parser(commands) -> None:
    from tailorlm.serve.config import ServeConfig

    d = ServeConfig()
    p = commands.add_parser(
        "serve", help="serve a base model and its adapters over an OpenAI-compatible API",
        description="Serve the base model and every adapter of the registry made on it (and "
        "--adapter folders) at /v1/completions, /v1/chat/completions and /v1/models. A request "
        "names its adapter in `model`: NAME, NAME:VERSION or NAME@ALIAS. The API key is read "
        "from the environment (--api-key-env), never from a flag. docs/serving.md has the rest.")
    p.add_argument("--model", default="smollm2-135m", help="the base model: a catalog name, "
                   "a model folder or a .gguf file (default: smollm2-135m)")
    p.add_argument("--registry", metavar="DIR", help="the adapter registry (default: "
                   "$TAILORLM_REGISTRY or TAILORLM_HOME/registry)")
    p.add_argument("--adapter", action="append", default=[], metavar="NAME=DIR",
                   help="also serve the adapter folder DIR as model NAME (repeatable)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key-env", default="TAILOR_API_KEY", metavar="VAR",
                   help="the environment variable holding the API key (default TAILOR_API_KEY)")
    p.add_argument("--dtype", default="float32", help="float32, bfloat16 or auto")
    p.add_argument("--max-resident-mb", type=float, default=d.max_resident_mb,
                   help=f"memory adapters may hold, least recently used evicted first "
                   f"(default {d.max_resident_mb:g})")
    p.add_argument("--max-body-mb", type=float, default=d.max_body_mb,
                   help=f"largest request body (default {d.max_body_mb:g}); larger: 413")
    p.add_argument("--max-tokens-limit", type=int, default=d.max_tokens_limit,
                   help=f"largest max_tokens a request may ask (default {d.max_tokens_limit})")
    p.add_argument("--max-n", type=int, default=d.max_n,
                   help=f"largest n (choices per prompt) (default {d.max_n})")
    p.add_argument("--max-queue", type=int, default=d.max_queue,
                   help=f"requests waiting at most; more: 429 with Retry-After (default "
                   f"{d.max_queue})")
    p.add_argument("--max-batch", type=int, default=d.max_batch,
                   help=f"rows per engine batch (default {d.max_batch})")
    p.add_argument("--request-timeout-s", type=float, default=d.request_timeout_s,
                   help=f"seconds a request may take; then 503 (default {d.request_timeout_s:g})")
    p.add_argument("--log-prompts", action="store_true",
                   help="write prompt text in the per-request log lines (off: ids, adapter, "
                   "tokens, time and status only)")
    p.add_argument("--allow-no-key", action="store_true",
                   help="serve on a non-loopback --host without an API key")
    p.set_defaults(run=run)


def run(args) -> int:
    import uvicorn

    from tailorlm.errors import TailorError
    from tailorlm.models import load_backend
    from tailorlm.registry.registry import default_root
    from tailorlm.serve.app import create_app
    from tailorlm.serve.config import ServeConfig

    key = os.environ.get(args.api_key_env) or None
    if key is None and not _loopback(args.host) and not args.allow_no_key:
        raise TailorError(f"{args.api_key_env} is not set and --host {args.host} is reachable "
                          f"from other machines: set a key (export {args.api_key_env}=...) or "
                          f"pass --allow-no-key")
    adapters = {}
    for item in args.adapter:
        name, eq, folder = item.partition("=")
        if not (eq and name and folder):
            raise TailorError(f"--adapter {item!r}: write NAME=DIR")
        if not os.path.isfile(os.path.join(folder, "adapter.json")):
            raise TailorError(f"--adapter {item!r}: {folder} is not an adapter folder (no "
                              f"adapter.json)")
        adapters[name] = folder
    config = ServeConfig(max_body_mb=args.max_body_mb, max_tokens_limit=args.max_tokens_limit,
                         max_n=args.max_n, max_queue=args.max_queue, max_batch=args.max_batch,
                         request_timeout_s=args.request_timeout_s,
                         max_resident_mb=args.max_resident_mb, log_prompts=args.log_prompts)
    backend = load_backend(args.model, dtype=args.dtype)
    app = create_app(backend, base_name=args.model if os.sep not in args.model else None,
                     config=config, registry_root=args.registry or default_root(),
                     adapters=adapters, api_key=key)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s",
                        stream=sys.stderr)
    logging.getLogger("tailorlm.serve").setLevel(logging.INFO)
    print(f"tailor serve: {args.model} at http://{args.host}:{args.port}/v1 "
          f"({'key from ' + args.api_key_env if key else 'no API key'})", file=sys.stderr,
          flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
