"""``goldmig bench-fuzz``: the stream parser and summariser on a million generated and mutated inputs."""
