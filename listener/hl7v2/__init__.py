"""hl7v2 layer."""
