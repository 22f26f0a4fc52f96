"""Deterministic discrete-event simulator for the sans-IO protocol cores."""
