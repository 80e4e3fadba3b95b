"""Registry: lookup, suggestions, duplicates, filtering, ids, and entry-point plugins."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from sparsebench import methods
from sparsebench.methods import Method, UnknownNameError, register


def test_builtins_are_registered():
    assert {"full", "gold", "window"} <= set(methods.names())


def test_unknown_name_suggests():
    with pytest.raises(UnknownNameError, match="did you mean 'window'"):
        methods.get("windwo")
    with pytest.raises(KeyError):
        methods.create("no_such_method_at_all")


def test_unknown_parameter_suggests():
    with pytest.raises(UnknownNameError, match="did you mean 'w'"):
        methods.create("window", ww=3)
    with pytest.raises(UnknownNameError, match="no parameter"):
        methods.create("window").clone(width=3)


def test_duplicate_names_raise():
    with pytest.raises(ValueError, match="already registered"):

        @register("window")
        @dataclass(kw_only=True)
        class Other(Method):
            pass


def test_register_needs_a_method_dataclass():
    with pytest.raises(ValueError, match="subclass of Method"):
        register("not_a_method")(int)
    with pytest.raises(ValueError, match="snake_case"):
        register("Bad-Name")


def test_names_filters_by_glob_and_tags():
    assert methods.names("win*") == ["window"]
    refs = methods.names(reference=True)
    assert "full" in refs and "gold" in refs and "window" not in refs
    with pytest.raises(UnknownNameError, match="unknown tag"):
        methods.names(refrence=True)


def test_check_params_on_the_method_and_the_registry():
    cls = methods.get("window")
    cls.check_params(["w", "global_tokens", "seed"])
    for check in (cls.check_params, lambda p: methods.check_params(cls, p)):
        with pytest.raises(UnknownNameError, match="did you mean 'w'"):
            check(["ww"])
    # The contract module defines the check itself; it needs nothing from the registry.
    source = Path(sys.modules[methods.Method.__module__].__file__).read_text()
    assert "_registry" not in source


def test_ids_are_stable_and_params_round_trip():
    w = methods.create("window", w=16)
    assert w.id == "window[w=16]"
    assert methods.create("window").id == "window"
    assert w.clone(w=3).get_params() == {"seed": 0, "w": 3, "global_tokens": 0}
    assert dataclasses.replace(w).id == w.id


PLUGIN = '''
from dataclasses import dataclass
from typing import ClassVar
from sparsebench.methods import Graph, Method, Tags, Band


@dataclass(kw_only=True)
class Diagonal(Method):
    """Only the diagonal."""

    tags: ClassVar[Tags] = Tags()

    def _predict(self, q, k, *, lengths, causal):
        B, H, N, _ = q.shape
        return Graph((B, H, N, k.shape[2]), [Band(0, 0)])
'''


def test_entry_point_plugin_from_an_installed_distribution(tmp_path):
    src = tmp_path / "src"
    (src / "toy_sb_plugin").mkdir(parents=True)
    (src / "toy_sb_plugin" / "__init__.py").write_text(textwrap.dedent(PLUGIN))
    (src / "pyproject.toml").write_text(
        textwrap.dedent(
            """
            [build-system]
            requires = ["setuptools"]
            build-backend = "setuptools.build_meta"
            [project]
            name = "toy-sb-plugin"
            version = "0.1"
            [project.entry-points."sparsebench.methods"]
            toy_diagonal = "toy_sb_plugin:Diagonal"
            """
        )
    )
    site = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(site),
            str(src),
        ],
        check=True,
        capture_output=True,
    )
    code = textwrap.dedent(
        """
        import torch
        from sparsebench import methods
        m = methods.create("toy_diagonal")
        g = m.predict(torch.randn(1, 2, 5, 4), torch.randn(1, 2, 5, 4))
        print(methods.names("toy*"), int(g.num_edges().sum()))
        """
    )
    env = {"PYTHONPATH": str(site), "PATH": ""}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['toy_diagonal'] 10"
