"""`brainrl serve`: expose a brain model over HTTP so several training ranks share one loaded model."""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    p = subparsers.add_parser("serve", help="serve a brain model over HTTP (GET /health, POST /predict)")
    p.add_argument("--model", default="synthetic", help="brain model to serve: synthetic, tribe, ...")
    p.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="brain model argument, e.g. worker=true or python=/opt/tribe/bin/python (repeatable)")
    p.add_argument("--speech", default=None,
                   help="speech engine for POST /predict {'texts': [...]} (e.g. espeak); stimuli work without it")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1; others need --token)")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--token", default=None, help="bearer token clients must send (default $BRAINRL_SERVE_TOKEN)")
    p.add_argument("--max-batch", type=int, default=64, help="most stimuli coalesced into one predict call")
    p.add_argument("--batch-window-ms", type=float, default=10.0, help="how long a request waits for company")
    p.add_argument("--limit", action="append", default=[], metavar="KEY=VALUE",
                   help="per-request limit, e.g. max_items=128 or max_seconds_per_request=1200 (repeatable; "
                        "see GET /health 'limits' for all keys and docs/multi-gpu.md)")
    p.add_argument("--header-timeout", type=float, default=10.0,
                   help="seconds a connection has to send a request's headers (default 10)")
    p.add_argument("--body-timeout", type=float, default=30.0,
                   help="seconds a request has to send its body, plus one per MB (default 30)")
    p.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    from brainrl.brain import get_brain_model
    from brainrl.brain.server import BrainServer
    from brainrl.brain.wire import ServeLimits
    from brainrl.cli.common import parse_key_values

    limit_values = parse_key_values(args.limit)
    known = set(ServeLimits().to_dict())
    unknown = sorted(set(limit_values) - known)
    if unknown:
        raise ValueError(f"unknown --limit {', '.join(unknown)}; known limits: {', '.join(sorted(known))}")
    limits = ServeLimits(**limit_values)
    model = get_brain_model(args.model, **parse_key_values(args.model_arg))
    speech = None
    if args.speech:
        from brainrl.stimulus import get_speech_engine

        speech = get_speech_engine(args.speech)
    server = BrainServer(model, host=args.host, port=args.port, token=args.token, speech=speech,
                         max_batch=args.max_batch, batch_window_s=args.batch_window_ms / 1000.0, limits=limits,
                         header_timeout_s=args.header_timeout, body_timeout_s=args.body_timeout)
    log.info("serving %s at %s (token %s)", args.model, server.url, "required" if server.token else "off")
    print(f"brainrl serve: {args.model} at {server.url}", flush=True)
    print(f"use it:  brainrl predict TEXT --model remote --model-arg url={server.url}, or in a recipe "
          f"brain: {{model: remote, model_kwargs: {{url: {server.url}}}}}"
          + ("" if speech else "  (texts need --speech espeak; this server takes only stimuli)"), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
        model.close()
    return 0
