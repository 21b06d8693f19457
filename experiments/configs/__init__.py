"""Experiment configs: ``default.py`` (the schema and the CPU quick start) and one file per experiment."""
