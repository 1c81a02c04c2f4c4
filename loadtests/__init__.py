"""Benchmarks (make bench) and Locust scenarios (make load); they use the HTTP API only."""
