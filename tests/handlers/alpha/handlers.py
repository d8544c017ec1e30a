"""Test handlers for tests/test_function_executor.py (base_dir = this folder)."""

import asyncio
import ctypes
import logging
import math
import os
import sys
import time

import helpers


def echo(event, context):
    return {"event": event, "where": "alpha"}


def double(event, context):
    return event * 2


async def async_echo(event, context):
    await asyncio.sleep(0.01)
    return {"async": True, "event": event}


def sibling(event, context):
    return {"helper": helpers.NAME, "module": __name__}


def not_json(event, context):
    return {1, 2, 3}


def nan(event, context):
    return math.nan


class Boom(ValueError):
    pass


def fail(event, context):
    raise Boom(f"bad input {event!r}")


def spin(event, context):
    while True:
        pass


def busy(event, context):
    """Compute (no sleeping) for ``event`` seconds."""
    end = time.monotonic() + event
    while time.monotonic() < end:
        pass
    return {"pid": os.getpid()}


def sleep(event, context):
    started = time.time()
    time.sleep(event)
    return {"start": started, "end": time.time(), "pid": os.getpid()}


def hog(event, context):
    blob = bytearray(event)
    return len(blob)


def exit_hard(event, context):
    os._exit(event)


def segfault(event, context):
    ctypes.string_at(0)


def chatty(event, context):
    print("to stdout")
    print("to stderr", file=sys.stderr)
    os.write(1, b"raw fd 1\n")
    os.system("echo from a subprocess")
    logging.getLogger("user").info("via logging")
    context.logger.warning("via context.logger")
    return "ok"


def ctx(event, context):
    first = context.remaining_time_s()
    time.sleep(0.05)
    return {
        "run_id": context.run_id,
        "step": context.step,
        "attempt": context.attempt,
        "index": context.index,
        "deadline": context.deadline,
        "first": first,
        "second": context.remaining_time_s(),
        "millis": context.get_remaining_time_in_millis(),
        "aws_request_id": context.aws_request_id,
        "function_name": context.function_name,
        "tenant": getattr(context, "tenant", None),
    }


def lazy_sibling(event, context):
    import helpers as again

    return again.NAME


def print_then_spin(event, context):
    print("about to hang", flush=True)
    while True:
        pass
