"""cdrwatch services: ingest, detector, api, and the `cdrwatch` command line."""
