"""Calls from the annotation service to the other services."""
