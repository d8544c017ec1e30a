from .sub.tools import helper  # noqa: F401
