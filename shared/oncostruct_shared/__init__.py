"""Code every OncoStruct service uses the same way (no service's domain logic)."""

__version__ = "0.1.0"
