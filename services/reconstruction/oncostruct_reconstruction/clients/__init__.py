"""Calls to upstreams of the reconstruction service (Triton; imaging and annotations later)."""
