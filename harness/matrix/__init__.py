"""matrix.yaml: load and validate it into frozen objects, expand it into cells."""
