"""A sibling module the alpha handlers import."""

NAME = "alpha-helpers"
