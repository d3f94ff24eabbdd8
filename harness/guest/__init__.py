"""The golden guest: its image (build and cache) and its agent's console protocol."""
