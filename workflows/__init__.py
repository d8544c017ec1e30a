"""The workflow language: spec models and loading, DAG, templating, event patterns, schedules."""
