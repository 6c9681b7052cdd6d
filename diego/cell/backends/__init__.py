"""Backends: how a cell's containers are made real (local namespaces, Docker)."""
