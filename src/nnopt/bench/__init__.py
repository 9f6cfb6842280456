"""Benchmarks: jobs, backends (local, Ray, batched), results, statistics, reports."""
