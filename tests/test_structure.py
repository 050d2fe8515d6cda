"""The package's shape stays what the README's Layout promises: no import cycle between rlaif's
modules (imports inside functions included) and no function over 60 lines.
Figures come from benchmarks/structure.py, which prints them beside any older commit."""
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("structure", ROOT / "benchmarks" / "structure.py")
structure = importlib.util.module_from_spec(spec)
spec.loader.exec_module(structure)


def figures():
    return structure.figures(structure.sources(ROOT, None))


def test_no_import_cycle_between_rlaif_modules():
    f = figures()
    assert f["cycles_module_level"] == []
    assert f["cycles_any_import"] == []


def test_no_function_over_60_lines():
    assert [f"{name} ({n} lines)" for n, name, _ in figures()["over_60"]] == []


def test_the_cycle_finder_finds_a_cycle():
    assert structure.cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
