"""Guest-visible invariants after a migration, and the cell's verdict on them. No QEMU here.

- :mod:`~harness.checks.result`: what every check is made of (:class:`Verdict`,
  :class:`CheckResult`, ``not_measured``/``not_applicable``, check ids, :class:`Limits`).
- :mod:`~harness.checks.generic`: the generic checks every migrating scenario composes
  (``GENERIC``, ``generic_checks`` on :class:`Observations`) and the helpers scenarios build
  their own checks from (``ticks_on_schedule``, ``ipis_delivered``, ``timebase_jump``, ...).
- :mod:`~harness.checks.timebase`: the timebase checks of one hop (:class:`HopTimebase`).
- :mod:`~harness.checks.machine_state`: the machine state compared across each hop.
- :mod:`~harness.checks.verdict`: a cell's verdict, check by check, against known failures.

A scenario's own checks stay in its module (:mod:`harness.scenarios`) and use these helpers.
Import from the submodule; this package re-exports nothing.
"""
