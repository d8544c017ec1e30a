"""The engine's error records and the errorTypes it writes.

A step's error is Lambda's shape, ``{"errorType", "errorMessage"[, "stackTrace"]}``: a user's
exception keeps its class name as errorType; what the engine itself decides is one of the
``Sluice.*`` types below (stable names: retry rules, ``catch`` and subscribers match them).
"""

from __future__ import annotations

from typing import Any

TIMEOUT = "Sluice.Timeout"  #: the attempt ran past its timeout
OUT_OF_MEMORY = "Sluice.OutOfMemory"  #: the attempt's worker went past its memory limit
WORKER_CRASHED = "Sluice.WorkerCrashed"  #: the worker process died under the attempt
BAD_OUTPUT = "Sluice.InvalidOutput"  #: the handler returned something that is not JSON
HANDLER_NOT_FOUND = "Sluice.HandlerNotFound"  #: ``module:callable`` did not resolve
ENGINE_RESTARTED = "Sluice.EngineRestarted"  #: a crash interrupted the attempt (it is retried)
ENGINE_SHUTDOWN = "Sluice.EngineShutdown"  #: a shutdown cut the attempt short (it resumes)
ENGINE_ERROR = "Sluice.EngineError"  #: a bug in the engine failed the step (see the engine log)
TEMPLATE_ERROR = "Sluice.TemplateError"  #: an input, ``when``, ``for_each`` or output did not render
INVALID_INPUT = "Sluice.InvalidInput"  #: run or step input does not fit what it is given to
INVALID_JOB = "Sluice.InvalidJob"  #: a container step's job was refused at submit
NO_CONTAINER_RUNTIME = "Sluice.NoContainerRuntime"  #: a container step with no Docker engine
STEP_FAILED = "Sluice.StepFailed"  #: a run failed because this step did (no error of its own)


def error_record(error_type: str, message: str) -> dict[str, Any]:
    return {"errorType": error_type, "errorMessage": message}
