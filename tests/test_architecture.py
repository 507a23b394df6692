"""The house rules, read from the source: imports run down the floors only, the floors under Lightning do not
import it, entry points stay thin and do not import each other, nothing edits sys.path, no function is long
without saying why."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("objectives", "lit_modules", "benchmarks")
ENTRY = 5
# floors, lowest first: the longest matching module prefix decides
FLOORS = {
    "lit_modules.core": 0,
    "objectives": 1,
    "lit_modules": 2,
    "benchmarks.evaluation": 3,
    "benchmarks.reporting": 3,
    "benchmarks.runner": 4,
    "benchmarks.performance": 4,
}
LONGEST_FUNCTION = 60


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def floor(module: str) -> int:
    if (
        module.startswith("benchmarks.")
        and module.count(".") == 1
        and module.split(".")[1] not in {p.split(".")[1] for p in FLOORS if p.startswith("benchmarks.")}
    ):
        return ENTRY  # benchmarks/<entry point>.py
    matches = [prefix for prefix in FLOORS if module == prefix or module.startswith(prefix + ".")]
    if not matches:
        return ENTRY if module == "benchmarks" else 0
    return FLOORS[max(matches, key=len)]


def sources() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def project_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import of the project's own packages, at any depth of the file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return [(line, name) for line, name in found if name.split(".")[0] in PACKAGES]


def third_party_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def known_module(name: str) -> str:
    """The module an imported name lives in: ``a.b.c`` if it is a module or package, else ``a.b``."""
    parts = name.split(".")
    while parts:
        base = ROOT.joinpath(*parts)
        if base.with_suffix(".py").exists() or (base / "__init__.py").exists():
            return ".".join(parts)
        parts.pop()
    return name


def test_floors_are_the_packages_of_the_tree():
    assert floor("lit_modules.core.model") == 0
    assert floor("objectives.nce") == 1
    assert floor("lit_modules.system") == 2
    assert floor("benchmarks.evaluation.metrics") == 3
    assert floor("benchmarks.runner.job") == 4
    assert floor("benchmarks.run") == ENTRY
    packages = {module_name(p) for p in sources() if p.name == "__init__.py"}
    unplaced = [m for m in packages if m not in PACKAGES and not any(m.startswith(prefix) for prefix in FLOORS)]
    assert not unplaced, f"packages without a floor: {unplaced}"


def test_no_import_runs_up_a_floor():
    upward = []
    for path in sources():
        importer = module_name(path)
        for line, name in project_imports(path):
            imported = known_module(name)
            if floor(imported) > floor(importer):
                upward.append(f"{path.relative_to(ROOT)}:{line} imports {imported} (floor {floor(imported)})")
    assert not upward, "imports from a lower floor to a higher one:\n" + "\n".join(upward)


def test_the_scan_sees_an_import_inside_a_function(tmp_path):
    path = tmp_path / "probe.py"
    path.write_text("def f():\n    from lit_modules.system import LanguageModelSystem\n")
    (line, name), *_ = project_imports(path)
    assert line == 2 and known_module(name) == "lit_modules.system"
    assert floor(known_module(name)) > floor("lit_modules.core.model")  # refused in lit_modules/core


def test_floors_below_lightning_do_not_import_it():
    offenders = [
        str(p.relative_to(ROOT))
        for p in sources()
        if floor(module_name(p)) < 2 and "lightning" in third_party_imports(p)
    ]
    assert not offenders, f"pure-torch floors importing Lightning: {offenders}"


def test_entry_points_are_thin_and_independent():
    entries = [p for p in (ROOT / "benchmarks").glob("*.py") if p.name != "__init__.py"]
    assert {p.stem for p in entries} >= {"run", "tune", "tuned", "report", "perf", "score", "scaling", "corpus"}
    for path in entries:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        mains = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main"]
        assert mains, f"{path.name} has no main()"
        assert mains[0].end_lineno - mains[0].lineno + 1 <= 60, f"{path.name}: main is longer than 60 lines"
        for line, name in project_imports(path):
            assert floor(known_module(name)) < ENTRY, f"{path.name}:{line} imports another entry point: {name}"


def test_entry_points_are_console_scripts():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    entries = sorted(p.stem for p in (ROOT / "benchmarks").glob("*.py") if p.name != "__init__.py")
    assert sorted(target.split(":")[0].split(".")[1] for target in scripts.values()) == entries
    assert all(target.endswith(":main") for target in scripts.values())


def test_nothing_edits_sys_path():
    offenders = [
        str(p.relative_to(ROOT))
        for p in [*sources(), *(ROOT / "tests").glob("*.py")]
        if "sys.path" in p.read_text(encoding="utf-8") and p.name != "test_architecture.py"
    ]
    assert not offenders, f"sys.path edited in {offenders}"


@pytest.mark.parametrize("path", sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_function_is_long_without_a_reason(path):
    """A function over 60 lines must say why in its docstring (a line starting 'Long because')."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            reason = "Long because" in (ast.get_docstring(node) or "")
            assert length <= LONGEST_FUNCTION or reason, f"{path.name}:{node.lineno} {node.name} is {length} lines"


def test_tests_take_fixtures_and_never_import_conftest():
    offenders = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "tests").rglob("*.py")
        if any(name.split(".")[0] == "conftest" for name in third_party_imports(p))
    ]
    assert not offenders, f"tests importing conftest: {offenders}"
