"""What goldmig's commands do beyond running the suite: per-patch and fault-campaign matrices,
benchmarks, saved streams, stand-in lab hosts (harness/cli.py parses their options)."""
