"""Architecture contracts: layers (import-linter) and no module reaching into another's privates."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"methods": "sparsebench.methods", "datasets": "sparsebench.datasets"}
PACKAGES["bench"] = "sparsebench.bench"
SOURCES = sorted(p for folder in [*PACKAGES, "sparsebench"] for p in (ROOT / folder).rglob("*.py"))


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    parts[0] = PACKAGES.get(parts[0], parts[0])  # the root folder is `sparsebench`
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p) for p in SOURCES}


def _absolute(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _private_part(name: str) -> str | None:
    return next((p for p in name.split(".") if p.startswith("_") and not p.startswith("__")), None)


def private_imports(path: Path, module: str | None = None) -> list[str]:
    """Imports in ``path`` of another module's private name or of another package's private module.

    A module may import a private module of its own package (``from ._base import Method``),
    never a ``_private`` name defined in another module.
    """
    module = module or _module_name(path)
    where = "line"
    own_package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = []
    imported: set[str] = set()
    attribute_uses: list[ast.Attribute] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            target = _absolute(module, node, path.name == "__init__.py")
            if not target.startswith("sparsebench"):
                continue
            private_mod = _private_part(target)
            if private_mod and not target.startswith(own_package + "."):
                found.append(f"{where}:{node.lineno} imports module {target}")
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                if target == own_package and submodule in MODULES:
                    continue  # a private module of the module's own package
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    found.append(f"{where}:{node.lineno} imports {alias.name} from {target}")
            if target.startswith("sparsebench"):
                imported.update(a.asname or a.name for a in node.names)
        elif isinstance(node, ast.Attribute):
            attribute_uses.append(node)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("sparsebench") and _private_part(alias.name):
                    if not alias.name.startswith(own_package + "."):
                        found.append(f"{where}:{node.lineno} imports {alias.name}")
    for node in attribute_uses:
        name = node.value.id if isinstance(node.value, ast.Name) else None
        if name in imported and _private_part(node.attr):
            found.append(f"{where}:{node.lineno} uses {name}.{node.attr}")
    return found


def test_no_module_imports_another_modules_private_names():
    found = [
        f"{path.relative_to(ROOT)}: {line}" for path in SOURCES for line in private_imports(path)
    ]
    assert not found, "private imports across modules:\n" + "\n".join(found)


def test_private_import_check_catches_violations(tmp_path):
    # The check itself must fail on the patterns it forbids.
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from sparsebench.methods._registry import register\n"
        "from sparsebench.methods.gold import _private_thing\n"
        "from .metrics import _macro\n"
        "from sparsebench import methods\n"
        "methods._registry.check_params\n"
    )
    found = private_imports(probe, "sparsebench.bench.probe")
    assert len(found) == 4, found


@pytest.mark.skipif(
    shutil.which("lint-imports") is None
    and not (Path(sys.executable).parent / "lint-imports").exists(),
    reason="import-linter is in the test extra",
)
def test_layers_import_contracts(tmp_path):
    exe = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    # import-linter (grimp) analyses subpackages only under a namespace root, and the source
    # tree's root `sparsebench/` is a regular package whose folder does not hold the mapped
    # subpackages; so the contracts run on a namespace view of the three folders.
    view = tmp_path / "sparsebench"
    view.mkdir()
    try:
        for folder in PACKAGES:
            (view / folder).symlink_to(ROOT / folder, target_is_directory=True)
    except OSError as e:
        pytest.skip(f"no symlinks here ({e})")
    out = subprocess.run(
        [exe, "--no-cache", "--no-logo", str(ROOT / "pyproject.toml")],
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},  # only the view
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "2 kept, 0 broken" in out.stdout, out.stdout
