"""``ascend-xllm-cpu``: the xLLM-compatible CPU engine.

Takes xLLM's command line (gflags syntax; an unknown flag is an error, as in xLLM) and behaves
like xLLM where it is observable: one process per rank (``--nnodes`` ranks, ``--node_rank`` the
global rank, rendezvous at ``--master_node_addr``), rank 0 serves the OpenAI API on ``--port``
once the model is loaded and then logs ``Brpc Server started on port <port>``. Ranks run the
reference model sharded over gloo (attention TP = nnodes / dp_size, MoE EP = ep_size).

Flags the CPU has no use for (devices, HCCL, graphs, memory fractions) are accepted and ignored.
Optional API key (not an xLLM feature): the environment variable ``ASCEND_XLLM_CPU_API_KEY``.
Served max model length (xLLM has no flag for it; it serves ``max_position_embeddings``): the
environment variable ``ASCEND_XLLM_CPU_MAX_MODEL_LEN`` (the recipe's ``serve.max_model_len``),
capped at the model's; longer prompts get OpenAI's context-length error, and request bodies above
``max(256 KiB, 32 bytes per token)`` get 413.
Rank liveness: every rank but 0 sends a heartbeat every ``--health_check_interval_ms``; rank 0's
``/health`` answers 503 once a rank has been silent for 5 intervals.

Example:
  ascend-xllm-cpu --model=runs/tiny-glm5/w8a8-sharded --port=18080 --nnodes=2 --node_rank=0 \\
      --master_node_addr=127.0.0.1:18081 --ep_size=2 --reasoning_parser=glm5 --tool_call_parser=glm5
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path

from ascend.serve.cpu_engine.flags import FlagError, parse_flags
from ascend.serve.xllm_flags import CPU_ENGINE_MAX_MODEL_LEN_ENV, READY_LINE

log = logging.getLogger("ascend.serve.cpu_engine")
API_KEY_ENV = "ASCEND_XLLM_CPU_API_KEY"
MAX_MODEL_LEN_ENV = CPU_ENGINE_MAX_MODEL_LEN_ENV
BODY_BYTES_PER_TOKEN, MIN_BODY_BYTES = 32, 256 << 10


def _setup_logging(rank: int) -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s %(levelname).1s rank{rank} %(name)s] %(message)s")


def load_generator(flags: dict):
    """This rank's runner of the reference runtime (every rank calls this)."""
    try:
        from ascend.reference.runner import ModelRunner
    except ImportError as err:
        from ascend.errors import BackendUnavailable

        raise BackendUnavailable("the reference model runner is not available", why=str(err),
                                 fix="install the complete ascend-recipes package") from None
    host, _, port = flags["master_node_addr"].rpartition(":")
    return ModelRunner(flags["model"], rank=flags["node_rank"], world_size=flags["nnodes"], dp=flags["dp_size"],
                       ep=flags["ep_size"], master_addr=host or "127.0.0.1", master_port=int(port),
                       heartbeat_s=max(0.1, flags["health_check_interval_ms"] / 1000))


def max_model_len_from_env() -> int | None:
    """``ASCEND_XLLM_CPU_MAX_MODEL_LEN`` as a positive int, None when unset."""
    from ascend.errors import ServeError

    raw = os.environ.get(MAX_MODEL_LEN_ENV, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise ServeError(f"{MAX_MODEL_LEN_ENV}={raw!r} is not a positive integer", fix="set it to a token count, e.g. 4096")
    return int(raw)


def build_state(generator, flags: dict, *, api_key: str | None = None, max_model_len: int | None = None):
    """Everything rank 0 needs to serve: tokenizer, chat template, parsers, scheduler.
    ``max_model_len``: the served context (None: the model's ``max_position_embeddings``)."""
    from ascend.chat import ChatTemplate
    from ascend.chat.reasoning import get_reasoning_grammar
    from ascend.chat.tool_calls import get_tool_grammar
    from ascend.errors import AscendError, ServeError
    from ascend.serve.cpu_engine.api import EngineState
    from ascend.serve.cpu_engine.scheduler import Scheduler
    from ascend.serve.cpu_engine.text import TextCodec

    model_dir = Path(flags["model"])
    codec = TextCodec.from_model_dir(model_dir)
    if max_model_len is not None:
        if max_model_len > codec.max_context:
            log.warning("%s=%d is above the model's max_position_embeddings %d: serving %d", MAX_MODEL_LEN_ENV,
                        max_model_len, codec.max_context, codec.max_context)
        codec.max_context = min(max_model_len, codec.max_context)
    log.info("max model length %d tokens", codec.max_context)
    try:
        template = ChatTemplate.from_model_dir(model_dir)
    except AscendError as err:
        log.warning("no chat template, /v1/chat/completions disabled: %s", err.line())
        template = None
    reasoning = flags.get("reasoning_parser") or None
    tool = flags.get("tool_call_parser") or None
    for name, check in ((reasoning, get_reasoning_grammar), (tool, get_tool_grammar)):
        if name == "auto":
            raise ServeError("parser 'auto' is not supported by the CPU engine", fix="name the parser explicitly")
        if name:
            try:
                check(name)
            except ValueError as err:  # like xLLM: an unknown parser is fatal at startup
                raise ServeError(str(err)) from None
    scheduler = Scheduler(generator, codec.eos_ids, max_seqs=flags["max_seqs_per_batch"],
                          max_tokens_per_batch=flags["max_tokens_per_batch"])
    served = flags.get("model_id") or model_dir.name
    return EngineState(codec=codec, template=template, scheduler=scheduler, served_model=served,
                       reasoning_parser=reasoning, tool_call_parser=tool,
                       max_concurrent_requests=flags["max_concurrent_requests"], api_key=api_key,
                       max_body_bytes=max(MIN_BODY_BYTES, BODY_BYTES_PER_TOKEN * codec.max_context))


def make_server(state, *, host: str, port: int, num_threads: int = 8, on_shutdown=None):
    """A uvicorn server for ``state`` that logs xLLM's readiness line once it accepts connections.

    SIGINT/SIGTERM stop it gracefully; ``on_shutdown`` (e.g. releasing the follower ranks) runs
    before ``run()`` returns, and the process then exits normally instead of re-raising the signal.
    """
    import contextlib
    import threading

    import uvicorn

    from ascend.serve.cpu_engine.api import create_app

    app = create_app(state)

    class Server(uvicorn.Server):
        async def startup(self, sockets=None):
            state.scheduler.start()
            await super().startup(sockets=sockets)
            if self.started:
                log.info("%s %d, idle_timeout_s: -1, num_threads: %d", READY_LINE, port, num_threads)

        async def shutdown(self, sockets=None):
            log.info("Shutting down")
            await super().shutdown(sockets=sockets)
            state.scheduler.stop()
            if on_shutdown is not None:
                try:
                    on_shutdown()
                except Exception as err:  # followers already gone: nothing left to release
                    log.warning("releasing the other ranks failed: %s", err)
            log.info("Application shutdown complete.")

        @contextlib.contextmanager
        def capture_signals(self):
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    config = uvicorn.Config(app, host=host, port=port, log_level="info", access_log=False,
                            timeout_graceful_shutdown=5, lifespan="off")
    return Server(config)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "-help", "--helpfull"):
        print(__doc__)
        sys.exit(0 if argv else 1)
    try:
        flags = parse_flags(argv)
    except FlagError as err:
        print(f"ERROR: {err}", file=sys.stderr)  # gflags' wording; xLLM exits non-zero too
        sys.exit(1)
    rank = flags["node_rank"]
    _setup_logging(rank)
    from ascend.errors import AscendError

    try:
        log.info("loading %s as rank %d of %d (dp %d, ep %d)", flags["model"], rank, flags["nnodes"],
                 flags["dp_size"], flags["ep_size"])
        max_model_len = max_model_len_from_env()  # before the slow part: a bad value fails at once
        generator = load_generator(flags)
        if rank != 0:
            # serve rank 0's forward calls until it shuts down; released, this rank exits on its
            # own, so a launcher's SIGTERM (sent once rank 0 is gone) must not cut that short
            generator.follow(on_release=lambda: signal.signal(signal.SIGTERM, signal.SIG_IGN))
            return
        state = build_state(generator, flags, api_key=os.environ.get(API_KEY_ENV) or None,
                            max_model_len=max_model_len)
        server = make_server(state, host=flags["host"] or "127.0.0.1", port=flags["port"],
                             num_threads=flags["num_threads"], on_shutdown=generator.shutdown)
        try:
            server.run()
        finally:
            generator.shutdown()  # idempotent; covers a failed startup
    except AscendError as err:
        log.error("%s", err.line())
        sys.exit(err.exit_code)


if __name__ == "__main__":
    main()
