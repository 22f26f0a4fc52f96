"""Sans-IO protocol cores.

Every module here is a plain state machine: events and the current time go in,
effects (messages to send, timers to set, notifications) come out. Nothing here
imports trio or performs I/O; ``tests/test_layers.py`` enforces it.
"""
