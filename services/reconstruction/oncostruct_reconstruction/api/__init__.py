"""REST routes of the reconstruction service."""
