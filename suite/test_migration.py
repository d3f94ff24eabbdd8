"""Every cell of the matrix: one build pair, one machine type, one scenario."""

from harness.matrix.model import Cell, Matrix
from harness.pytest_plugin import run
from harness.runner.cell import CellRecord


def test_cell(cell: Cell, matrix: Matrix, cell_record: CellRecord) -> None:
    """Boot the golden guest on the source build, migrate it live to the destination
    build on the same machine type, and check that the guest saw nothing go wrong."""
    run(cell, matrix, cell_record)
