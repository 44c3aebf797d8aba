"""cosgitops: a Git repository as the source of truth for a fleet of immutable Linux systems."""

__version__ = "0.1.0"
