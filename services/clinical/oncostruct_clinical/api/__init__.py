"""FHIR REST routes of the clinical service."""
