"""Test doubles and harnesses: a local Deriv-protocol server with fault injection, the simulator's ticks
addressed by epoch range (what that server streams), and a real `bentoml serve` on loopback.

Tests, benchmarks and the local-server command import them; production modules never do (a test
checks it).
"""
