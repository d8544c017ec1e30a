"""A sibling module the beta handlers import."""

NAME = "beta-helpers"
