"""The build stage: sources in, one isolated PEP 517 build per worker process, verified wheels out."""
