"""Handlers of the retry example. `context.attempt` is 1 on the first try."""

import time


def call(event, context):
    if context.attempt <= event["fail_attempts"]:
        raise ConnectionError(f"service unavailable (attempt {context.attempt})")
    return {"answer": 42, "attempt": context.attempt}


def hang_first_attempt(event, context):
    if context.attempt == 1:
        time.sleep(60)  # the step's 1s timeout kills this attempt; the retry runs fresh
    return {"attempt": context.attempt, "remaining_s": round(context.remaining_time_s(), 1)}


def save(event, context):
    print("saving", event)  # stdout is captured in this attempt's log file
    return {"saved": True, "answer": event["answer"]["answer"], "tries": event["answer"]["attempt"]}
