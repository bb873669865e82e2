"""Benchmarks of scmetacell against its peers (MetaCell-2, SEACells, MetaQ) and baselines.

Entry point: ``python benchmarks/run_peers.py --help``.
"""
