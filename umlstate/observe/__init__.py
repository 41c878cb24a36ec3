"""Observation: the live host (kernel, files, processes, records) read once into a frozen Snapshot."""
