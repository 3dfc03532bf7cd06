"""REST routes of the annotation service."""
