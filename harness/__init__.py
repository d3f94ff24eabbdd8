"""goldmig's harness: matrix -> cells -> (builds, host pair, guest) -> migration -> checks -> report."""
