"""Telemetry: the request log and probes, Prometheus metrics, segment read counts."""
