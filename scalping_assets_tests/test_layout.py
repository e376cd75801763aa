"""The layering the README's layout promises, read from the import statements of every module."""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOMAIN = ("market", "features", "models", "backtest", "monitoring", "trading")


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, relative imports resolved against its package."""
    package = path.relative_to(REPO).with_suffix("").parts[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = list(package[: len(package) - node.level + 1]) if node.level else []
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def production_modules() -> list[Path]:
    files = [*(REPO / "scalping_assets").rglob("*.py"), *(REPO / "serving").rglob("*.py")]
    return [f for f in files if "testing" not in f.relative_to(REPO).parts]


def test_no_production_module_imports_the_test_doubles():
    offenders = {
        str(f.relative_to(REPO)): sorted(m for m in imported_modules(f) if m.startswith("scalping_assets.testing"))
        for f in production_modules()
    }
    assert not {f: m for f, m in offenders.items() if m}


def test_the_domain_packages_import_no_dagster():
    offenders = {}
    for package in DOMAIN:
        for f in (REPO / "scalping_assets" / package).rglob("*.py"):
            dagster = sorted(m for m in imported_modules(f) if m.split(".")[0] == "dagster")
            if dagster:
                offenders[str(f.relative_to(REPO))] = dagster
    assert not offenders
    assert imported_modules(REPO / "scalping_assets" / "assets" / "ticks.py") & {"dagster"}  # the reader sees imports


def test_only_the_tracking_module_imports_mlflow():
    importers = sorted(
        str(f.relative_to(REPO)) for f in production_modules() if any(m.split(".")[0] == "mlflow" for m in imported_modules(f))
    )
    assert importers == ["scalping_assets/models/tracking.py"]
