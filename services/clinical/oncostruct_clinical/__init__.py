"""OncoStruct clinical-context service: a FHIR R4 server for mCODE oncology data."""

__version__ = "0.1.0"
