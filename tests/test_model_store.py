"""ChIPVI on a bins store: training and the posterior read it in blocks and match the
in-memory model on the same bins; the posterior is written back into the store."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scvi
import torch
import zarr

from _chipvi_synthetic import make_two_chromosome_adata
from chipvi import ChipviInputError
from chipvi.io import _store, open_store, store_writer
from chipvi.model import ChIPVI
from chipvi.model import _chipvi as chipvi_model

TRAIN = {"max_epochs": 3, "batch_size": 700, "accelerator": "cpu", "enable_progress_bar": False}
CHUNK = 256


def _write_store(adata, path, layers=("control", "mapq", "control_mapq")):
    with store_writer(path, chunk=CHUNK) as writer:
        for a in range(0, adata.n_obs, 1000):  # blocks that are not chunks
            block = adata[a : a + 1000]
            obs = block.obs.copy()  # a view keeps only the chromosomes it holds
            obs["chrom"] = pd.Categorical(obs["chrom"], adata.obs["chrom"].cat.categories)
            writer.append(obs, np.asarray(block.X), {k: block.layers[k] for k in layers})
        writer.finish(adata.var, dict(adata.uns))
    return open_store(path)


@pytest.fixture(scope="module")
def memory():
    torch.set_num_threads(1)
    return make_two_chromosome_adata()


@pytest.fixture
def store(memory, tmp_path):
    return _write_store(memory, tmp_path / "bins.zarr")


def _trained(data):
    scvi.settings.seed = 0
    model = ChIPVI(data)
    model.train(**TRAIN)
    return model


@pytest.fixture(scope="module")
def trained_in_memory(memory):
    adata = memory.copy()
    ChIPVI.setup_anndata(adata)
    return adata, _trained(adata)


def test_training_from_store_equals_in_memory(store, trained_in_memory):
    _, in_memory = trained_in_memory
    model = _trained(store)
    assert model.library_names == in_memory.library_names
    loss, expected = (m.history["elbo_train"].to_numpy(float).ravel() for m in (model, in_memory))
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    state, expected = model.module.state_dict(), in_memory.module.state_dict()
    assert state.keys() == expected.keys()
    for key in state:
        np.testing.assert_allclose(state[key].numpy(), expected[key].numpy(), rtol=1e-4,
                                   atol=1e-6, err_msg=key)  # fmt: skip


def test_posterior_into_store_equals_in_memory(store, trained_in_memory, monkeypatch):
    adata, model = trained_in_memory
    model.add_posterior(adata)
    # Pieces of 700 bins at most: chr1 is cut by its gap
    # at 500, its second chain (900 bins) and chr2 (960) run in two pieces each, exactly.
    monkeypatch.setattr(chipvi_model, "_POSTERIOR_BINS", 700)
    assert store.run_ranges(700) == [(0, 500), (500, 1400), (1400, 2360)]
    assert store.run_ranges(3000) == [(0, 2360)]
    starts = np.array([a for a, _ in store.run_ranges(1)])
    assert starts.tolist() == [0, 500, 1400]
    assert chipvi_model._pieces(starts, 2360, 2000, 3000) == [(0, 2360)]
    assert chipvi_model._pieces(starts, 2360, 1000, 1500) == [(0, 1400), (1400, 2360)]
    assert chipvi_model._pieces(starts, 2360, 700, 700) == [
        (0, 500),
        (500, 950),
        (950, 1400),
        (1400, 1880),
        (1880, 2360),
    ]
    model.add_posterior(store)
    assert "chipvi_lfe" in store.layers and "chipvi_group_lfe" in store.obsm_keys
    back = open_store(store.path).to_memory()
    pd.testing.assert_frame_equal(back.obs, adata.obs.drop(columns="_chipvi_run_start"))
    for key in chipvi_model.POSTERIOR_KEYS.values():
        slot, name = key.format(prefix="chipvi").split("/")
        got, want = getattr(back, slot)[name], getattr(adata, slot)[name]
        if slot == "obsm":
            pd.testing.assert_index_equal(got.index, want.index)
            assert list(got.columns) == list(want.columns) == model.group_names
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-5,
                                   err_msg=name)  # fmt: skip
    record, want = back.uns["chipvi_posterior"], adata.uns["chipvi_posterior"]
    assert record["keys"] == want["keys"]
    np.testing.assert_allclose(record["params"]["stay"], want["params"]["stay"])


@pytest.mark.parametrize(("size", "keep"), [(300, 2**30), (450, 0)])
def test_posterior_in_pieces_equals_whole_chains(trained_in_memory, monkeypatch, size, keep):
    """In memory, every chain cut into pieces of at most ``size`` bins (2 to 4 per chain)
    gives what whole chains give, every key (the backward sweep's technical arrays kept for
    the piece pass, or computed again)."""
    adata, model = trained_in_memory
    model.add_posterior(adata)
    whole = adata.copy()
    monkeypatch.setattr(chipvi_model, "_POSTERIOR_BINS", size)
    monkeypatch.setattr(chipvi_model, "_TECH_KEEP_BYTES", keep)
    cut = adata.copy()  # a new AnnData: not the cached pass
    model.add_posterior(cut)
    for key in chipvi_model.POSTERIOR_KEYS.values():
        slot, name = key.format(prefix="chipvi").split("/")
        got, want = np.asarray(getattr(cut, slot)[name]), np.asarray(getattr(whole, slot)[name])
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-6, err_msg=name)
    lfe = np.asarray(whole.layers["chipvi_lfe"])
    assert lfe.std() > 0.1  # a real posterior


def test_posterior_again_replaces_it(store, trained_in_memory):
    _, model = trained_in_memory
    model.add_posterior(store)
    first = store.array("chipvi_lfe", 0, store.n_obs)
    model.add_posterior(store)
    np.testing.assert_array_equal(store.array("chipvi_lfe", 0, store.n_obs), first)
    # Nothing left next to the store (the temporary folder is gone).
    assert sorted(p.name for p in store.path.parent.iterdir()) == ["bins.zarr"]


def test_stopped_posterior_leaves_store_without_record(store, trained_in_memory, monkeypatch):
    _, model = trained_in_memory

    def full_disk(self, *args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_store.StoreAdder, "append", full_disk)
    with pytest.raises(OSError, match="No space"):
        model.add_posterior(store)
    reopened = open_store(store.path)
    assert "chipvi_lfe" not in reopened.layers and "chipvi_posterior" not in reopened.uns
    assert sorted(p.name for p in store.path.parent.iterdir()) == ["bins.zarr"]


def test_store_missing_layer(memory, tmp_path):
    path = tmp_path / "nomapq.zarr"
    _write_store(memory, path, layers=("control", "control_mapq"))
    with pytest.raises(ChipviInputError, match=r"no layer \['mapq'\]"):
        ChIPVI(path)


def test_store_other_version_or_incomplete(store):
    group = zarr.open_group(store.path, mode="r+")
    marker = dict(group.attrs[_store.MARKER])
    group.attrs[_store.MARKER] = {**marker, "version": "0.0.1"}
    with pytest.raises(ChipviInputError, match="written by chipvi 0.0.1"):
        ChIPVI(store.path)
    del group.attrs[_store.MARKER]
    with pytest.raises(ChipviInputError, match="completion marker is missing"):
        ChIPVI(store.path)


def test_store_bad_counts_named_with_bin(memory, tmp_path):
    bad = memory.copy()
    bad.X[1500, 1] = -3
    with pytest.raises(ChipviInputError, match="negative count .* at bin 1500, library 1"):
        ChIPVI(_write_store(bad, tmp_path / "bad.zarr"))


def test_posterior_into_other_bins_refused(memory, trained_in_memory, tmp_path):
    _, model = trained_in_memory
    other = _write_store(memory[:1000].copy(), tmp_path / "other.zarr")
    with pytest.raises(ChipviInputError, match="1000 bins"):
        model.add_posterior(other)


def test_save_load_on_store(store, memory, trained_in_memory, tmp_path):
    scvi.settings.seed = 0
    model = ChIPVI(store)
    model.train(max_epochs=1, batch_size=700, accelerator="cpu", enable_progress_bar=False)
    model.save(tmp_path / "model")
    with pytest.raises(ChipviInputError, match="reads the bins store"):
        model.get_denoised()
    # The same bins load from the store or in memory (the saved bin names agree).
    loaded = ChIPVI.load(tmp_path / "model", adata=store.path)
    adata = memory.copy()
    ChIPVI.setup_anndata(adata)
    in_memory = ChIPVI.load(tmp_path / "model", adata=adata)
    for other in (loaded, in_memory):
        np.testing.assert_allclose(other.gains.to_numpy(), model.gains.to_numpy())
    loaded.add_posterior()
    in_memory.add_posterior(adata)
    np.testing.assert_allclose(open_store(store.path).array("chipvi_lfe", 0, store.n_obs),
                               adata.layers["chipvi_lfe"], rtol=1e-4, atol=1e-5)  # fmt: skip
    np.testing.assert_allclose(
        loaded.get_denoised(adata, return_numpy=True), adata.layers["chipvi_lfe"], rtol=1e-5
    )
    other = _write_store(memory[:1000].copy(), tmp_path / "other.zarr")
    with pytest.raises(ChipviInputError, match="other bins or libraries"):
        ChIPVI.load(tmp_path / "model", adata=other)


def test_bigwig_from_store_equals_in_memory(store, trained_in_memory, tmp_path):
    import pyBigWig

    from chipvi.io import write_bigwig

    adata, model = trained_in_memory
    model.add_posterior(adata)
    model.add_posterior(store)
    for kwargs in ({"layer": "chipvi_lfe"}, {"key": "chipvi_group_lfe", "transform": np.exp}):
        disk = write_bigwig(store.path, tmp_path / "disk", overwrite=True, **kwargs)
        mem = write_bigwig(adata, tmp_path / "mem", overwrite=True, **kwargs)
        assert list(disk) == list(mem) and len(disk) >= 1
        for name in disk:
            a, b = pyBigWig.open(str(disk[name])), pyBigWig.open(str(mem[name]))
            assert a.chroms() == b.chroms() == {"chr1": 1440 * 200, "chr2": 960 * 200}
            for chrom in ("chr1", "chr2"):
                got, want = a.intervals(chrom), b.intervals(chrom)
                assert [i[:2] for i in got] == [i[:2] for i in want]
                np.testing.assert_allclose([i[2] for i in got], [i[2] for i in want], rtol=1e-4,
                                           atol=1e-5)  # fmt: skip


def test_run_ranges_of_one_chain(memory, tmp_path):
    one = memory[memory.obs["chrom"] == "chr2"].copy()
    store = _write_store(one, tmp_path / "one.zarr")
    assert store.run_ranges(100) == [(0, 960)]
    assert np.flatnonzero(store.run_starts(0, 960)).tolist() == [0]
    assert store.run_starts(300, 310).tolist() == [False] * 10


def test_cli_on_a_store_run(store, tmp_path, capsys, monkeypatch):
    from pathlib import Path

    import chipvi
    from chipvi.cli import main

    configs = Path(chipvi.__file__).parent / "configs"
    run = tmp_path / "run"
    args = ["train", "--config-dir", configs, "-q", "--run-dir", run, "--h5ad", store.path,
            "train.max_epochs=2", "model.n_hidden=8", "train.threads=1"]  # fmt: skip
    assert main([str(a) for a in args]) == 0
    assert main(["denoise", str(run), "-q"]) == 0
    back = open_store(store.path)
    assert "chipvi_posterior" in back.uns and "chipvi_group_lfe" in back.obsm_keys
    assert not (run / "denoised" / "denoised.h5ad").exists()  # the posterior is in the store
    tracks = sorted(p.name for p in (run / "denoised" / "tracks").iterdir())
    assert tracks == ["A.log2_fold_enrichment.bw"]
    lfe = back.obsm("chipvi_group_lfe", 0, back.n_obs)["A"].to_numpy()
    import pyBigWig

    bw = pyBigWig.open(str(run / "denoised" / "tracks" / tracks[0]))
    got = [bw.values("chr2", s, s + 1)[0] for s in (0, 200, 400)]
    np.testing.assert_allclose(got, lfe[1400:1403] / np.log(2), rtol=1e-5)
    # bedGraph from a store too, a chunk at a time.
    assert main(["denoise", str(run), "-q", "--overwrite", "--format", "bedgraph"]) == 0
    path = run / "denoised" / "tracks" / "A.log2_fold_enrichment.bedGraph"
    table = pd.read_csv(path, sep="\t", header=None)
    assert len(table) == back.n_obs and table.iloc[1400, :3].tolist() == ["chr2", 0, 200]
    np.testing.assert_allclose(table[3].to_numpy()[1400:1403], lfe[1400:1403] / np.log(2),
                               rtol=1e-5)  # fmt: skip

    # call reads the store's posterior (this model's: no second pass) a chromosome at a time.
    def no_pass(*args, **kwargs):
        raise AssertionError("a second posterior pass")

    with monkeypatch.context() as m:
        m.setattr(ChIPVI, "add_posterior", no_pass)
        assert main(["call", str(run), "--quiet", "-q", "0.2"]) == 0
    want = chipvi.tl.call_enriched_regions(store.path, q=0.2)
    got = pd.read_csv(run / "peaks" / "A.narrowPeak", sep="\t", header=None)
    assert len(got) == len(want) > 0
    assert got[[0, 1, 2]].values.tolist() == want[["chrom", "start", "end"]].values.tolist()
    # report: the run's facts, and the concordance of the store's posterior.
    assert main(["report", str(run), "-o", str(tmp_path / "report"), "-q"]) == 0
    assert pd.read_csv(tmp_path / "report" / "runs.csv")["status"].tolist() == ["finished"]
    conc = pd.read_csv(tmp_path / "report" / "concordance.csv")
    memory = back.to_memory()
    want = chipvi.tl.replicate_concordance(memory, denoised="chipvi_own_lfe", key_added=None)
    np.testing.assert_allclose(conc["spearman_denoised"], want["spearman_denoised"], rtol=1e-10)
    # qc and plot-profile read the store a chunk at a time: the numbers of its bins in memory.
    assert main(["qc", str(run), "--no-strand", "-q"]) == 0
    qc = pd.read_csv(run / "qc" / "qc.tsv", sep="\t", index_col=0)
    assert list(qc.index) == list(store.var.index)
    fp = chipvi.tl.fingerprint(memory, key_added=None)
    np.testing.assert_allclose(qc["auc"], fp["auc"], rtol=1e-3)  # written with 4 digits
    got = pd.read_csv(run / "qc" / "concordance.tsv", sep="\t")
    np.testing.assert_allclose(got["pearson_denoised"], want["pearson_denoised"], rtol=1e-3)
    assert {p.name for p in (run / "qc").iterdir()} >= {"fingerprint.png", "concordance_A.png"}
    peaks = tmp_path / "peaks.bed"
    peaks.write_text("chr1\t10000\t10400\nchr2\t30000\t30400\nchr2\t100000\t100200\n")
    assert main(["plot-profile", str(run), "-r", str(peaks), "-q"]) == 0
    profile = pd.read_csv(run / "profile" / "profile.tsv", sep="\t", index_col=0)
    want = chipvi.tl.profile(memory, peaks, key="chipvi_group_lfe", key_added=None)
    np.testing.assert_allclose(profile.to_numpy(), np.nanmean(want["matrix"], axis=0).T,
                               rtol=1e-5)  # fmt: skip


def test_get_denoised_out_streams_the_store_posterior(store, trained_in_memory, tmp_path,
                                                      monkeypatch):  # fmt: skip
    from chipvi.io import read_bigwig_bins

    adata, model = trained_in_memory
    passes = []
    add_posterior = ChIPVI.add_posterior
    monkeypatch.setattr(ChIPVI, "add_posterior",
                        lambda self, *a, **k: passes.append(1) or add_posterior(self, *a, **k))  # fmt: skip
    # No posterior in the store yet: one pass into it, then the group tracks from it.
    written = model.get_denoised(store, kind="fold_enrichment", level="group",
                                 out=tmp_path / "group")  # fmt: skip
    assert len(passes) == 1 and "chipvi_posterior" in open_store(store.path).uns
    want = model.get_denoised(adata, kind="fold_enrichment", level="group")
    assert sorted(written) == sorted(want.columns) == sorted(model.group_names)
    got = read_bigwig_bins(written, adata)
    np.testing.assert_allclose(got[want.columns], want, rtol=1e-4, atol=1e-5)
    # The store's posterior is this model's: read again, no second pass; bedGraph text.
    written = model.get_denoised(store.path, kind="sd", out=tmp_path / "sd",
                                 track_format="bedgraph")  # fmt: skip
    assert len(passes) == 1 and list(written) == model.library_names
    want = model.get_denoised(adata, kind="sd")
    for name, path in written.items():
        table = pd.read_csv(path, sep="\t", header=None, names=["chrom", "start", "end", "v"])
        assert len(table) == adata.n_obs
        np.testing.assert_array_equal(table["start"], adata.obs["start"])
        np.testing.assert_allclose(table["v"], want[name], rtol=1e-5, atol=1e-6)
    # Another model's posterior in the store is not read: a pass of this one replaces it.
    other = ChIPVI(store)  # trained less than model
    other.train(**{**TRAIN, "max_epochs": 1})
    other.get_denoised(kind="probability_enriched", out=tmp_path / "other")
    assert len(passes) == 2
    record = open_store(store.path).uns["chipvi_posterior"]["params"]
    np.testing.assert_allclose(record["stay"], other.stay_probabilities, rtol=1e-6)
    with pytest.raises(ChipviInputError, match="writes every bin"):
        model.get_denoised(store, indices=[0, 1], out=tmp_path / "x")
    with pytest.raises(ChipviInputError, match="median technical mean"):
        model.get_denoised(store, kind="biological_rate", out=tmp_path / "x")
    with pytest.raises(ChipviInputError, match="single file but"):
        model.get_denoised(store, level="library", out=tmp_path / "x.bedGraph")
    group = model.get_denoised(store, level="group", out=tmp_path / "g.bedGraph")
    assert list(group) == model.group_names == ["A"]  # one group: one file


def test_get_denoised_out_in_memory(trained_in_memory, tmp_path):
    from chipvi.io import read_bigwig_bins

    adata, model = trained_in_memory
    before = set(adata.layers)
    name = model.library_names[0]
    written = model.get_denoised(adata, kind="log_fold_enrichment_lower", out=tmp_path / "t")
    assert list(written) == model.library_names and set(adata.layers) == before
    got = read_bigwig_bins(written[name], adata)[f"{name}"]
    want = model.get_denoised(adata, kind="log_fold_enrichment_lower")[name]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_regions_of_a_store_equal_in_memory(store, trained_in_memory, monkeypatch):
    from chipvi import tl
    from chipvi.tl import _regions_store

    adata, model = trained_in_memory
    model.add_posterior(adata)
    model.add_posterior(store)
    settings = [
        {"q": 0.05},
        {"q": 0.01, "level": "library", "min_lfe": 0.8},  # probabilities from mean and sd
        {"q": 0.05, **tl.BROAD_DOMAINS},  # broad, with the whole-region test
        {"q": 0.2, "merge_gap": 400, "min_bins": 3, "level": "library_own"},
    ]
    for kwargs in settings:
        want = tl.call_enriched_regions(adata, key_added=None, **kwargs)
        assert len(want) > 3, kwargs
        for bins in (1 << 16, 8):  # exact whatever the first pass's probability bins
            monkeypatch.setattr(_regions_store, "_BINS", bins)
            got = tl.call_enriched_regions(store.path, **kwargs)
            pd.testing.assert_frame_equal(got, want, check_exact=False, rtol=1e-5,
                                          obj=f"{kwargs} {bins}")  # fmt: skip
    with pytest.raises(ChipviInputError, match="key= works on an in-memory"):
        tl.call_enriched_regions(store, key="chipvi_lfe")
