"""Running one cell: its roles, the context scenarios get, the run directory and its evidence."""
