"""Shared test helpers: real servers on loopback, sealed environments."""
