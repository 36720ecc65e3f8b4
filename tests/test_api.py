"""The public library API and the package layout: what users import stays importable, every
module stays short, and the layers import only downwards."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import unlearn_cli

PACKAGE = Path(unlearn_cli.__file__).parent
MAX_LINES = 400
# a layer may import itself and the layers after it, never one before it
LAYERS = ["cli", "pipeline", "verify", "surrogates", "faces", "report", "io", "runtime", "engine"]
# the entry points and the package's own foundation (config, errors), outside the layers
SHARED = {"__init__", "__main__", "config", "errors"}


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported_modules(source: str, module: str, is_package: bool = False) -> set[str]:
    """Absolute names of the unlearn_cli modules that ``source`` (the text of ``module``)
    imports, relative imports resolved."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1])
                names.add(f"{base}.{node.module}" if node.module else base)
            else:
                names.add(node.module or "")
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {name for name in names if name == "unlearn_cli" or name.startswith("unlearn_cli.")}


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] not in SHARED else None


def _upward_imports(module: str, source: str, is_package: bool = False) -> list[str]:
    own = _layer(module)
    if own is None:
        return []
    return [
        imported
        for imported in sorted(_imported_modules(source, module, is_package))
        if (target := _layer(imported)) is not None and LAYERS.index(target) < LAYERS.index(own)
    ]


@pytest.mark.parametrize(
    "name",
    [
        "protect",
        "protect_people",
        "ProtectConfig",
        "ProtectResult",
        "collect_inputs",
        "InputSet",
        "ClassLayout",
        "Embedder",
        "NoiseForm",
        "FaceMode",
        "MetadataPolicy",
        "UnlearnError",
        "SetupError",
        "NoImagesError",
        "SurrogateUnavailableError",
        "ImageError",
    ],
)
def test_public_names_import_from_the_package(name: str) -> None:
    assert name in unlearn_cli.__all__
    assert getattr(unlearn_cli, name).__name__ == name


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'pipelines'"):
        unlearn_cli.pipelines  # noqa: B018


def test_no_module_is_longer_than_the_limit() -> None:
    long = {
        str(path.relative_to(PACKAGE)): n
        for path in _modules()
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_layers_import_only_downwards() -> None:
    upward = {
        _module_name(path): found
        for path in _modules()
        if (found := _upward_imports(_module_name(path), path.read_text(), path.stem == "__init__"))
    }
    assert not upward, upward


def test_the_engine_imports_nothing_above_it() -> None:
    for path in (PACKAGE / "engine").rglob("*.py"):
        imported = _imported_modules(path.read_text(), _module_name(path), path.stem == "__init__")
        outside = {m for m in imported if not m.startswith("unlearn_cli.engine")}
        assert not outside, f"{path.name} imports {outside}"


def test_the_layer_check_sees_upward_imports() -> None:
    source = (
        "from unlearn_cli.cli.app import app\nfrom ..io.images import Photo\n"
        "from .training import train\n"
    )
    assert _upward_imports("unlearn_cli.engine.models", source) == [
        "unlearn_cli.cli.app",
        "unlearn_cli.io.images",
    ]
    assert _upward_imports("unlearn_cli.cli.app", source) == []
