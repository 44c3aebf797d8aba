"""Click commands, one module per area; imported lazily by :mod:`cosgitops.cli`."""
