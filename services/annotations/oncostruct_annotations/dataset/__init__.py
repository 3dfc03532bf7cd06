"""AI-ready dataset export: volumes, masks, manifest."""
