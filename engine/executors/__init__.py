"""Executors run one step attempt: functions in warm worker processes, containers on Docker."""
