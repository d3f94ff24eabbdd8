"""goldmig's harness: matrix -> cells -> (builds, host pair, guest) -> migration -> checks -> report."""

import pkgutil

# A lab's own scenarios may live in a harness/scenarios/ directory elsewhere on the Python path.
__path__ = pkgutil.extend_path(__path__, __name__)
