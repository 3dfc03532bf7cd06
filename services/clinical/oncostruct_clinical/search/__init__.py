"""FHIR search: SearchParameter registry, write-time indexing and SQL (http://hl7.org/fhir/R4/search.html)."""
