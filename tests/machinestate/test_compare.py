"""compare and the rules: what differs, what a rule excuses and why, components on one side."""

from __future__ import annotations

from harness.machinestate import (
    RULES,
    Component,
    Difference,
    MachineState,
    Rule,
    compare,
    compare_all,
    excused,
)

NO_RES = "ffffffffffffffff"


def _state(side: str, *components: Component) -> MachineState:
    return MachineState(side, components)


def _cpu(index: int, **fields: str) -> Component:
    base = {"MSR": "800000000280b033", "TB": "6119607980", "DECR": "67151389", "RES": NO_RES}
    return Component(f"CPU {index}", {**base, **fields})


class TestCompare:
    def test_equal_states_have_no_difference(self) -> None:
        src = _state("source", _cpu(0), _cpu(1))
        assert compare(src, _state("destination", _cpu(0), _cpu(1))) == []

    def test_a_field_that_differs_names_component_field_and_both_values(self) -> None:
        src = _state("source", _cpu(0), _cpu(1))
        dst = _state("destination", _cpu(0), _cpu(1, DECR="18446744072946885439"))
        assert compare(src, dst) == [Difference("CPU 1", "DECR", "67151389", "18446744072946885439")]

    def test_a_component_on_one_side_only(self) -> None:
        src = _state("source", _cpu(0), _cpu(1))
        dst = _state("destination", _cpu(0), Component("ICP 0", {"XIRR": "ff000000"}))
        assert compare(src, dst) == [Difference("CPU 1", "present", "yes", "(absent)"),
                                     Difference("ICP 0", "present", "(absent)", "yes")]

    def test_a_field_only_one_builds_monitor_prints_is_set_aside_not_compared(self) -> None:
        """QEMU 11.1 prints TB_OFFSET in info registers, 10.2 does not: a format difference."""
        src = _state("source", _cpu(0))
        dst = _state("destination", _cpu(0, TB_OFFSET="0000000000000000"))
        comparison = compare_all(src, dst, hold_ms=1.0)
        assert comparison.differences == () and comparison.excused == ()
        assert comparison.one_sided == (Difference("CPU 0", "TB_OFFSET", "(absent)", "0000000000000000"),)


class TestRules:
    def test_every_rule_has_a_reason(self) -> None:
        assert RULES and all(len(rule.reason) > 40 for rule in RULES)

    def test_reservation_length_is_excused_only_without_a_reservation(self) -> None:
        src = _state("source", _cpu(0, **{"RES length": "004"}))
        dst = _state("destination", _cpu(0, **{"RES length": "000"}))
        assert compare(src, dst) == []
        [excuse] = excused(src, dst)
        assert excuse.difference == Difference("CPU 0", "RES length", "004", "000")
        assert "reserve_addr" in excuse.reason

        held = "c000000002632410"
        src = _state("source", _cpu(0, RES=held, **{"RES length": "004"}))
        dst = _state("destination", _cpu(0, RES=held, **{"RES length": "000"}))
        assert compare(src, dst) == [Difference("CPU 0", "RES length", "004", "000")]

    def test_a_reservation_may_be_lost_on_the_destination_but_not_gained_or_moved(self) -> None:
        held, other = "c00000001fe71a00", "c000000002632410"
        src = _state("source", _cpu(1, RES=held, **{"RES length": "008"}))
        lost = _state("destination", _cpu(1, **{"RES length": "000"}))
        assert compare(src, lost) == []
        assert [e.difference.field for e in excused(src, lost)] == ["RES", "RES length"]
        moved = _state("destination", _cpu(1, RES=other, **{"RES length": "008"}))
        assert compare(src, moved) == [Difference("CPU 1", "RES", held, other)]
        gained = _state("destination", _cpu(1, RES=held))
        assert compare(_state("source", _cpu(1)), gained) == [Difference("CPU 1", "RES", NO_RES, held)]

    def test_reservation_length_printed_by_one_build_only(self) -> None:
        src = _state("source", _cpu(0))  # QEMU 5.2 and 7.2 print no length
        dst = _state("destination", _cpu(0, **{"RES length": "000"}))
        assert compare(src, dst) == []

    def test_derived_hflags_excused_but_msr_is_not(self) -> None:
        src = _state("source", _cpu(0, HF="8000000002802031"))
        dst = _state("destination", _cpu(0, HF="2690203d", MSR="800000000280a033"))
        comparison = compare_all(src, dst, hold_ms=12.5)
        assert comparison.differences == (
            Difference("CPU 0", "MSR", "800000000280b033", "800000000280a033"),)
        assert [e.difference.field for e in comparison.excused] == ["HF"]
        assert comparison.hold_ms == 12.5 and comparison.source is src

    def test_rules_are_given(self) -> None:
        decr = Rule("CPU *", "DECR", "a test's own rule")
        src = _state("source", _cpu(0), Component("ICS", {"range": "1000..1fff"}))
        dst = _state("destination", _cpu(0, DECR="1"), Component("ICS", {"range": "1000..1fff"}))
        assert compare(src, dst, rules=(decr,)) == []
        assert compare(src, dst, rules=()) == [Difference("CPU 0", "DECR", "67151389", "1")]
        assert str(decr) == "CPU * DECR: a test's own rule"
