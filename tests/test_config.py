"""Config composition, overrides, sweeps and validation (chipvi.cli._config)."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from chipvi import ChipviInputError
from chipvi.cli._config import compose, expand_sweep, validate_variants

REPO_CONFIGS = Path(__file__).resolve().parents[1] / "src" / "chipvi" / "configs"


@pytest.fixture
def cdir(tmp_path):
    """A small config folder: root + two data files + one model + two experiments."""
    (tmp_path / "data").mkdir()
    (tmp_path / "model").mkdir()
    (tmp_path / "experiment").mkdir()
    (tmp_path / "config.yaml").write_text(
        "defaults:\n  data: a\n  model: m\nname: base\nseed: 3\ntrain:\n  max_epochs: 7\n"
    )
    (tmp_path / "data" / "a.yaml").write_text("h5ad: a.h5ad\nbin_size: 200\n")
    (tmp_path / "data" / "b.yaml").write_text("h5ad: b.h5ad\nbin_size: 25\n")
    (tmp_path / "model" / "m.yaml").write_text("technical: mu_r\nn_hidden: 16\n")
    (tmp_path / "experiment" / "e.yaml").write_text(
        "defaults:\n  data: b\nname: exp\ntrain:\n  lr: 0.01\n"
    )
    (tmp_path / "experiment" / "sw.yaml").write_text(
        "name: sw\nsweep:\n  model.consistency_weight: [0, 1, 10]\n"
    )
    return tmp_path


def test_composition_order(cdir):
    cfg = compose(cdir)
    assert (cfg.name, cfg.seed, cfg.data.bin_size, cfg.model.n_hidden, cfg.train.max_epochs) == (
        "base",
        3,
        200,
        16,
        7,
    )
    # experiment reselects data and overrides values; the command line wins over all files
    cfg = compose(cdir, ["experiment=e", "train.max_epochs=2", "model.n_hidden=64"])
    assert (cfg.name, cfg.data.h5ad, cfg.data.bin_size) == ("exp", "b.h5ad", 25)
    assert (cfg.train.lr, cfg.train.max_epochs, cfg.model.n_hidden) == (0.01, 2, 64)
    # a group selection on the command line beats the experiment's own defaults
    assert compose(cdir, ["experiment=e", "data=a"]).data.bin_size == 200


def test_list_and_null_overrides(cdir):
    cfg = compose(
        cdir,
        [
            "data.chroms=[chr1,chr2]",
            "model.consistency=[mse]",
            "data.h5ad=null",
            "data.samplesheet=s.csv",
        ],
    )
    assert list(cfg.data.chroms) == ["chr1", "chr2"]
    assert list(cfg.model.consistency) == ["mse"]
    assert cfg.data.h5ad is None and cfg.data.samplesheet == "s.csv"


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("h5ad: a.h5ad\nbin_sise: 200\n", "unknown config key 'data.bin_sise'"),
        ("h5ad: a.h5ad\nbin_size: wide\n", "'data.bin_size' has the wrong type"),
        ("h5ad: a.h5ad\nchroms: chr1\n", "'data.chroms' has the wrong type"),
        ("h5ad: [a\n", "not valid YAML"),
        ("- a\n- b\n", "must hold a mapping"),
    ],
)
def test_bad_file_names_key_and_file(cdir, content, needle):
    (cdir / "data" / "bad.yaml").write_text(content)
    with pytest.raises(ChipviInputError) as err:
        compose(cdir, ["data=bad"])
    assert needle in str(err.value)
    assert str(cdir / "data" / "bad.yaml") in str(err.value)


def test_bad_root_and_experiment_files(cdir):
    (cdir / "experiment" / "typo.yaml").write_text("train:\n  max_epoch: 3\n")
    with pytest.raises(ChipviInputError, match=r"typo\.yaml.*'train\.max_epoch'"):
        compose(cdir, ["experiment=typo"])
    (cdir / "config.yaml").write_text("defaults:\n  dataset: a\n")
    with pytest.raises(ChipviInputError, match=r"config\.yaml.*defaults\.dataset"):
        compose(cdir)


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("model.n_hiden=3", "unknown config key 'model.n_hiden'"),
        ("train.max_epochs=ten", "'train.max_epochs' has the wrong type"),
        ("data.bin_size=0", "'data.bin_size': bin_size must be >= 1, got 0"),
        ("data.fragment_length=0", "'data.fragment_length': fragment_length must be >= 1"),
        ("data.max_per_position=lots", "'data.max_per_position': max_per_position must be"),
        ("train.train_size=1.5", "'train.train_size' must be in (0, 1]"),
        ("train.loggers=[mlflow]", "unknown logger 'mlflow'"),
        ("model.model_class=chipvi.ChIPVI", "'model.model_class' must be 'package.module:Class'"),
        ("noequals", "not of the form key=value"),
    ],
)
def test_bad_command_line(cdir, override, needle):
    with pytest.raises(ChipviInputError) as err:
        compose(cdir, [override])
    assert needle in str(err.value)


def test_missing_group_file_lists_choices(cdir):
    with pytest.raises(ChipviInputError, match=r"No data config 'c'.*available: a, b"):
        compose(cdir, ["data=c"])
    with pytest.raises(ChipviInputError, match="config.yaml"):
        compose(cdir / "nowhere")


def test_multirun_is_a_cartesian_product(cdir):
    runs = expand_sweep(cdir, ["model.consistency_weight=0,1,10", "seed=1,2"], multirun=True)
    got = sorted((c.model.consistency_weight, c.seed) for c, _ in runs)
    assert got == sorted((w, s) for w in (0.0, 1.0, 10.0) for s in (1, 2))
    # without -m a comma is an ordinary character of a value
    (single,) = expand_sweep(cdir, ["name=a,b"], multirun=False)
    assert single[0].name == "a,b"


def test_experiment_sweep_expands_and_is_not_stored(cdir):
    runs = expand_sweep(cdir, ["experiment=sw"], multirun=False)
    assert [c.model.consistency_weight for c, _ in runs] == [0.0, 1.0, 10.0]
    assert all(len(c.sweep) == 0 for c, _ in runs)  # each run's config re-runs just that run


def test_saved_config_round_trip(cdir, tmp_path):
    cfg = compose(cdir, ["experiment=e"])
    saved = tmp_path / "saved.yaml"
    saved.write_text(OmegaConf.to_yaml(cfg))
    again = compose(None, ["seed=9"], config_file=saved)
    assert again.data.bin_size == 25 and again.seed == 9
    with pytest.raises(ChipviInputError, match="cannot be combined with --config"):
        compose(None, ["data=a"], config_file=saved)


def test_variant_names_checked_against_registry(cdir, monkeypatch):
    import chipvi.module

    monkeypatch.setattr(chipvi.module, "list_technical", lambda: ["mu_r", "r_p"], raising=False)
    monkeypatch.setattr(
        chipvi.module, "list_consistency", lambda: ["mse", "pearson"], raising=False
    )
    validate_variants(compose(cdir, ["model.technical=r_p", "model.consistency=[pearson]"]))
    with pytest.raises(ChipviInputError, match=r"'model\.technical' is 'zinb'.*mu_r, r_p"):
        validate_variants(compose(cdir, ["model.technical=zinb"]))
    with pytest.raises(ChipviInputError, match=r"'model\.consistency' is 'kl'"):
        validate_variants(compose(cdir, ["model.consistency=[mse,kl]"]))


def test_shipped_configs_compose():
    base = compose(REPO_CONFIGS)
    assert base.data.samplesheet == "bundled:cssq_chr19" and base.model.technical == "control_slope"
    assert compose(REPO_CONFIGS, ["data=cssq_chr19_25bp"]).data.bin_size == 25
    assert compose(REPO_CONFIGS, ["model=r_p"]).model.technical == "r_p"
    assert compose(REPO_CONFIGS, ["experiment=demo"]).name == "demo"
    sweep = expand_sweep(REPO_CONFIGS, ["experiment=consistency_weights"], multirun=False)
    assert [c.model.consistency_weight for c, _ in sweep] == [0.0, 1.0, 10.0]
