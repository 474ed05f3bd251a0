"""Ingest: validates, normalises and pseudonymises CDRs and produces them to Kafka."""
