"""The detector: a faust worker around a pure compliance core (services.detector.core)."""
