"""The TRIBE worker process: ``python -m brainrl.brain.tribe.worker`` inside the TRIBE environment.

It reads request frames on stdin and answers on stdout (brainrl.brain.tribe.protocol). Anything else
that writes to stdout (tqdm, print, C libraries) is sent to stderr, so the protocol stream stays clean.
Requests: ``load`` (config -> identity), ``predict`` (stimuli -> one array or error per item),
``ping``, ``shutdown``. It exits when stdin closes, so it never outlives its parent for long.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from typing import Any

from brainrl.brain.tribe.protocol import PROTOCOL_VERSION, WorkerGone, read_frame, stimulus_from_dict, write_frame


def _serve(in_fd: int, out) -> int:
    from brainrl.brain.tribe.config import TribeConfig
    from brainrl.brain.tribe.engine import TribeEngine

    engine: TribeEngine | None = None
    while True:
        try:
            request, _ = read_frame(in_fd, timeout=None)
        except WorkerGone:
            return 0
        op = request.get("op")
        reply: dict[str, Any] = {"id": request.get("id"), "op": op}
        arrays = []
        try:
            if op == "ping":
                reply.update(ok=True, pid=os.getpid(), loaded=engine is not None)
            elif op == "load":
                if request.get("protocol") != PROTOCOL_VERSION:
                    raise ValueError(f"protocol {request.get('protocol')} != worker protocol {PROTOCOL_VERSION}")
                engine = TribeEngine(TribeConfig.from_dict(request["config"])).load()
                reply.update(ok=True, identity=engine.identity(), load_seconds=engine.load_seconds, pid=os.getpid())
            elif op == "predict":
                if engine is None:
                    raise RuntimeError("predict before load")
                items = []
                stimuli, bad = [], {}
                for index, data in enumerate(request["stimuli"]):
                    try:
                        stimuli.append((index, stimulus_from_dict(data)))
                    except ValueError as error:
                        bad[index] = str(error)
                results = dict(zip([i for i, _ in stimuli], engine.predict([s for _, s in stimuli])))
                for index in range(len(request["stimuli"])):
                    value = results.get(index, bad.get(index, "internal error: no result"))
                    if isinstance(value, str):
                        items.append({"error": value})
                    else:
                        items.append({"array": len(arrays)})
                        arrays.append(value)
                reply.update(ok=True, items=items)
            elif op == "shutdown":
                write_frame(out, dict(reply, ok=True))
                return 0
            else:
                raise ValueError(f"unknown op {op!r}")
        except Exception as error:  # noqa: BLE001 - report to the client, keep serving
            traceback.print_exc(file=sys.stderr)
            reply.update(ok=False, error=f"{type(error).__name__}: {error}")
            arrays = []
        write_frame(out, reply, arrays)


def main() -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="worker %(levelname)s %(name)s: %(message)s")
    protocol_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # fd 1 now goes to stderr: stray prints cannot corrupt the protocol
    sys.stdout = sys.stderr
    return _serve(0, protocol_out)


if __name__ == "__main__":
    sys.exit(main())
