"""Run configs derived from the signatures, shipped as package data, `chipvi init`,
`chipvi train --h5ad/--samplesheet`, and `chipvi bin` flags from read_bams."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import yaml

import chipvi
from chipvi.cli import build_parser, main
from chipvi.cli._config import compose, default_config_dir, shipped_config_dir
from chipvi.cli._model import model_kwargs, train_kwargs

ROOT = Path(__file__).resolve().parents[1]


def _names(func, skip):
    return [
        p.name
        for p in inspect.signature(func).parameters.values()
        if p.name not in skip and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]


def test_every_parameter_is_reachable_from_the_config():
    cfg = compose(shipped_config_dir())
    for name in _names(chipvi.ChIPVI.__init__, {"self", "adata"}):
        assert name in cfg.model, f"ChIPVI({name}=...) is not a config key"
    for name in _names(chipvi.ChIPVI.train, {"self", "callbacks"}):
        assert name in cfg.train, f"ChIPVI.train({name}=...) is not a config key"
    # The store arguments (out=, chunk_size=, overwrite=) are `chipvi bin -o x.zarr`'s.
    for name in _names(
        chipvi.read_bams, {"samplesheet", "progress", "out", "chunk_size", "overwrite"}
    ):
        assert name in cfg.data, f"read_bams({name}=...) is not a config key"
    # ... and each can be set from the command line, with its own type checked.
    cfg = compose(shipped_config_dir(), ["model.low_mapq=5", "train.warmup_fraction=0.5"])
    assert model_kwargs(cfg.model, chipvi.ChIPVI)["low_mapq"] == 5.0
    assert train_kwargs(cfg.train, chipvi.ChIPVI)["warmup_fraction"] == 0.5
    with pytest.raises(chipvi.ChipviInputError, match="'train.warmup_fraction' has the wrong type"):
        compose(shipped_config_dir(), ["train.warmup_fraction=lots"])


def test_chipvi_bin_has_a_flag_per_read_bams_argument():
    bin_parser = build_parser()._subparsers._group_actions[0].choices["bin"]
    bin_parser.format_help()  # the flags are derived when the command is used
    dests = {a.dest for a in bin_parser._actions}
    for name in _names(chipvi.read_bams, {"samplesheet", "progress", "out"}):  # out: -o
        assert name in dests, f"read_bams({name}=...) has no `chipvi bin` flag"
    # the help is the docstring's first sentence, not cut at "e.g."
    region = next(a for a in bin_parser._actions if a.dest == "region")
    assert region.help.endswith("a bare chromosome name, e.g. for BAMs holding the reads of a "
                                "slice only.")  # fmt: skip


def test_a_new_model_argument_reaches_the_config_without_an_edit(monkeypatch):
    module = types.ModuleType("_knob_model")

    class Knobbed(chipvi.ChIPVI):
        def __init__(self, adata, new_knob: float = 0.5, shape: str = "wide", **kwargs):
            super().__init__(adata, **kwargs)

        def train(self, max_epochs: int | None = None, extra_steps: int = 3, **kwargs):
            return None

    module.Knobbed = Knobbed
    monkeypatch.setitem(sys.modules, "_knob_model", module)
    cfg = compose(shipped_config_dir(), ["model.model_class=_knob_model:Knobbed",
                                         "model.new_knob=2"])  # fmt: skip
    assert cfg.model.new_knob == 2.0 and cfg.model.shape == "wide" and cfg.train.extra_steps == 3
    kwargs = model_kwargs(cfg.model, Knobbed)
    assert kwargs["new_knob"] == 2.0
    with pytest.raises(chipvi.ChipviInputError, match="'model.new_knob' has the wrong type"):
        compose(shipped_config_dir(), ["model.model_class=_knob_model:Knobbed",
                                       "model.new_knob=big"])  # fmt: skip


def test_null_means_the_functions_own_default():
    cfg = compose(shipped_config_dir(), ["train.lr=null", "model.n_layers=null"])
    targs = train_kwargs(cfg.train, chipvi.ChIPVI)
    assert "lr" not in targs  # ChIPVI.train's own lr applies
    assert "n_layers" not in model_kwargs(cfg.model, chipvi.ChIPVI)
    # a parameter whose default is None keeps an explicit null
    assert train_kwargs(cfg.train, chipvi.ChIPVI).get("max_epochs", None) is None


def test_data_values_are_checked_by_read_bams_own_validator():
    from chipvi.io._binning import check_read_params

    with pytest.raises(chipvi.ChipviInputError) as from_function:
        check_read_params(200, 0, 0, True)
    with pytest.raises(chipvi.ChipviInputError) as from_config:
        compose(shipped_config_dir(), ["data.fragment_length=0"])
    assert str(from_function.value) in str(from_config.value)
    assert "'data.fragment_length'" in str(from_config.value)


def test_configs_ship_in_the_package(tmp_path, monkeypatch):
    shipped = shipped_config_dir()
    assert shipped.parent == Path(chipvi.__file__).resolve().parent
    assert (shipped / "config.yaml").is_file() and (shipped / "data").is_dir()
    monkeypatch.chdir(tmp_path)  # no ./configs here
    monkeypatch.delenv("CHIPVI_CONFIG_DIR", raising=False)
    assert default_config_dir() == shipped
    assert not (ROOT / "configs").exists()  # one copy of the configs, inside the package


def test_init_writes_starter_configs(tmp_path, capsys):
    target = tmp_path / "cfg"
    assert main(["init", str(target)]) == 0
    shipped = sorted(
        p.relative_to(shipped_config_dir()) for p in shipped_config_dir().rglob("*.yaml")
    )
    written = sorted(p.relative_to(target) for p in target.rglob("*.yaml"))
    assert set(shipped) < set(written) and Path("data/my_data.yaml") in written
    assert "chipvi train --config-dir" in capsys.readouterr().out
    cfg = compose(target, ["data=my_data"])
    assert cfg.data.samplesheet == "samples.csv" and cfg.data.region is None
    # refuses to overwrite edits unless told
    (target / "config.yaml").write_text("name: mine\n")
    assert main(["init", str(target)]) == 2
    assert "already holds" in capsys.readouterr().err
    assert (target / "config.yaml").read_text() == "name: mine\n"
    (target / "mine.yaml").write_text("kept: 1\n")  # the user's own file
    assert main(["init", str(target), "--overwrite"]) == 0
    assert (target / "config.yaml").read_text() == (
        shipped_config_dir() / "config.yaml"
    ).read_text()
    assert (target / "mine.yaml").read_text() == "kept: 1\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cfg"]  # no temporaries beside


@pytest.mark.parametrize("exists", [False, True])
def test_init_that_fails_half_way_writes_nothing(tmp_path, monkeypatch, capsys, exists):
    from chipvi.cli import _init

    target = tmp_path / "deep" / "cfg"
    if exists:
        target.mkdir(parents=True)
        (target / "config.yaml").write_text("name: mine\n")

    def half(folder, files):  # the disk fills after the first file
        rel = next(iter(files))
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(files[rel])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_init, "_write_files", half)
    assert main(["init", str(target), "--overwrite"]) != 0
    assert "No space left" in capsys.readouterr().err
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    assert left == (["deep", "deep/cfg", "deep/cfg/config.yaml"] if exists else ["deep"])


@pytest.mark.parametrize("flag", ["--h5ad", "--samplesheet"])
def test_train_on_own_data_does_not_inherit_demo_defaults(flag, tmp_path, capsys):
    own = tmp_path / ("bins.h5ad" if flag == "--h5ad" else "sheet.csv")
    own.write_text("x")
    status = main(["train", flag, str(own), "data.bin_size=100", "--show-config"])
    out = capsys.readouterr()
    assert status == 0, out.err
    data = yaml.safe_load(out.out)["data"]
    key, other = ("h5ad", "samplesheet") if flag == "--h5ad" else ("samplesheet", "h5ad")
    assert data[key] == str(own.resolve()) and data[other] is None
    # nothing of the bundled demo data is carried over; later overrides still apply
    assert data["region"] is None and data["chroms"] is None and data["bin_size"] == 100
    assert main(["train", flag, str(tmp_path / "missing"), "--show-config"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_built_wheel_works_outside_the_checkout(tmp_path):
    """The wheel carries the configs and the bundled data: installed into a venv (system site
    packages for the dependencies), its console script writes the starter configs with
    `chipvi init` in a folder that is not the source checkout."""
    pytest.importorskip("hatchling")  # the `test` extra installs it
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         str(ROOT), "-w", str(wheels)],
        check=True, capture_output=True,
    )  # fmt: skip
    (wheel,) = wheels.glob("chipvi-*.whl")
    venv = tmp_path / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
        check=True, capture_output=True,
    )  # fmt: skip
    python = venv / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q",
         str(wheel)],
        check=True, capture_output=True,
    )  # fmt: skip
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CHIPVI_CONFIG_DIR")}

    def run(*args):
        return subprocess.run(args, cwd=work, env=env, capture_output=True, text=True)

    code = (
        "import chipvi; print(chipvi.__file__); "
        "print(chipvi.datasets.cssq_chr19_samplesheet().is_file())"
    )
    where = run(str(python), "-c", code)
    assert where.returncode == 0, where.stderr
    path, bundled = where.stdout.split()
    assert path.startswith(str(venv)) and bundled == "True"
    made = run(str(venv / "bin" / "chipvi"), "init", "my_configs")
    assert made.returncode == 0, made.stderr
    assert "chipvi train --config-dir my_configs" in made.stdout
    shipped = yaml.safe_load((work / "my_configs" / "config.yaml").read_text())
    assert shipped["defaults"] and (work / "my_configs" / "experiment" / "demo.yaml").is_file()


def test_chipvi_bin_flags_reach_read_bams_and_errors_name_flags(tmp_path, capsys):
    import anndata as ad

    args = ["simulate", str(tmp_path / "sim"), "--seed", "1", "--n-chroms", "1",
            "--chrom-length", "50000", "--depths", "3000,2000", "-q"]  # fmt: skip
    assert main(args) == 0
    sheet = tmp_path / "sim" / "samplesheet.csv"
    for bai in (tmp_path / "sim").glob("*.bai"):
        bai.unlink()
    out = tmp_path / "bins.h5ad"
    assert main(["bin", str(sheet), "-o", str(out), "-q", "--bin-size", "500"]) == 2
    err = capsys.readouterr().err
    assert "--index" in err and "index=True" not in err
    # --index builds the indexes; the derived flags reach read_bams (recorded in uns)
    assert (
        main(
            [
                "bin",
                str(sheet),
                "-o",
                str(out),
                "-q",
                "--index",
                "--bin-size",
                "500",
                "--fragment-length",
                "150",
                "--no-keep-duplicates",
                "--chroms",
                "chr1",
            ]
        )
        == 0
    )
    adata = ad.read_h5ad(out)
    assert adata.n_obs == 100
    assert adata.uns["chipvi"]["fragment_length"] == 150
    assert not adata.uns["chipvi"]["keep_duplicates"]


def test_train_from_own_samplesheet_bins_with_read_bams(tmp_path, capsys):
    """`chipvi train --samplesheet` bins the BAMs with the data keys as read_bams' arguments."""
    import anndata as ad

    args = ["simulate", str(tmp_path / "sim"), "--seed", "2", "--n-chroms", "2",
            "--chrom-length", "40000", "--depths", "3000,2000", "-q"]  # fmt: skip
    assert main(args) == 0
    run = tmp_path / "run"
    status = main(
        ["train", "-q", "--samplesheet", str(tmp_path / "sim" / "samplesheet.csv"),
         "--run-dir", str(run), "data.bin_size=1000", "data.fragment_length=150",
         "model.model_class=_cli_fake_model:TinyChip", "model.n_hidden=4",
         "train.max_epochs=1", "train.checkpoint_interval_s=0"]
    )  # fmt: skip
    assert status == 0, capsys.readouterr().err
    bins = ad.read_h5ad(run / "data.h5ad")
    # both chromosomes (nothing of the demo's chr19 crop), 1 kb bins, the fragment length given
    assert bins.n_obs == 80 and set(bins.obs["chrom"]) == {"chr1", "chr2"}
    assert bins.uns["chipvi"]["bin_size"] == 1000 and bins.uns["chipvi"]["fragment_length"] == 150
    assert (run / "model" / "model.pt").is_file()
