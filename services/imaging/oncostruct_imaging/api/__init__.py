"""DICOMweb (PS3.18) routes of the imaging service."""
