"""Helpers shared by every entrypoint of the stack: waiting for a dependency, and process groups."""
