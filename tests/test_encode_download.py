"""Downloads from the fake portal: resume, md5, retries, bad out_dir, sample sheet."""

from __future__ import annotations

import hashlib
import os
import time

import pandas as pd
import pysam
import pytest

from chipvi import ChipviInputError
from chipvi.io.encode import DownloadError, EncodeClient, build_samplesheet, download
from chipvi.io.encode import _download as download_module


@pytest.fixture
def client(portal):
    return EncodeClient(portal.url, timeout=2, retries=3, backoff=0, min_interval=0)


@pytest.fixture
def sheet(client):
    """ENCSR100KKK: ChIP ENCFF101AAA + ENCFF102AAA, both paired with control ENCFF902CCC."""
    with pytest.warns(UserWarning):
        return build_samplesheet(["ENCSR100KKK"], assembly="GRCh38", client=client)


def md5(path) -> str:
    return hashlib.md5(open(path, "rb").read()).hexdigest()


def test_download_writes_verified_indexed_files_and_local_sheet(portal, client, sheet, tmp_path):
    out = tmp_path / "data"
    result = download(sheet, out, threads=3, progress=False, client=client)
    names = {"ENCFF101AAA.bam", "ENCFF102AAA.bam", "ENCFF902CCC.bam"}
    assert set(result.files["file"]) == names
    assert (result.files["status"] == "downloaded").all()
    for name in names:
        accession = name[:-4]
        assert md5(out / name) == portal.file(accession)["md5sum"]
        assert (out / f"{name}.bai").is_file()
        assert not (out / f"{name}.part").exists()
    # The shared control was fetched once.
    assert len(portal.requests("storage", "ENCFF902CCC.bam")) == 1
    # The index works: a region query returns the reads.
    with pysam.AlignmentFile(str(out / "ENCFF101AAA.bam")) as bam:
        assert bam.count("chr1", 0, 20000) == 40
    written = pd.read_csv(result.samplesheet, dtype=str, keep_default_na=False)
    assert result.samplesheet == out / "samplesheet.csv"
    assert list(written.columns[:6]) == ["sample", "bam", "control", "target", "group", "replicate"]
    # Local paths relative to the sheet's folder resolve to the downloaded files.
    for bam, control in zip(written["bam"], written["control"], strict=True):
        assert (result.samplesheet.parent / bam).is_file()
        assert (result.samplesheet.parent / control).is_file()
    assert written["control"].tolist() == ["ENCFF902CCC.bam", "ENCFF902CCC.bam"]
    assert "3 file(s) downloaded" in result.summary()


def test_second_run_skips_verified_files(portal, client, sheet, tmp_path):
    download(sheet, tmp_path, progress=False, client=client)
    before = len(portal.requests("storage"))
    again = download(tmp_path / "samplesheet.csv", tmp_path, progress=False, client=client)
    assert (again.files["status"] == "present").all()
    assert again.files["fetched"].sum() == 0
    assert len(portal.requests("storage")) == before


def test_corrupt_existing_file_is_downloaded_again(portal, client, sheet, tmp_path):
    download(sheet, tmp_path, progress=False, client=client)
    target = tmp_path / "ENCFF102AAA.bam"
    data = bytearray(target.read_bytes())
    data[100] ^= 0xFF
    target.write_bytes(bytes(data))
    again = download(sheet, tmp_path, progress=False, client=client)
    status = again.files.set_index("file")["status"]
    assert status["ENCFF102AAA.bam"] == "downloaded"
    assert status["ENCFF101AAA.bam"] == "present"
    assert md5(target) == portal.file("ENCFF102AAA")["md5sum"]


def test_resume_after_connection_drop(portal, client, sheet, tmp_path):
    size = portal.file("ENCFF101AAA")["file_size"]
    portal.fault("ENCFF101AAA.bam", ("drop", 200))
    result = download(sheet, tmp_path, progress=False, client=client)
    requests = portal.requests("storage", "ENCFF101AAA.bam")
    assert [r["range"] for r in requests] == [None, "bytes=200-"]
    assert md5(tmp_path / "ENCFF101AAA.bam") == portal.file("ENCFF101AAA")["md5sum"]
    fetched = result.files.set_index("file").loc["ENCFF101AAA.bam", "fetched"]
    assert fetched == size  # 200 bytes, then the rest


def test_resume_partial_file_left_by_a_killed_process(portal, client, sheet, tmp_path):
    blob = portal.blobs["ENCFF102AAA.bam"]
    (tmp_path / "ENCFF102AAA.bam.part").write_bytes(blob[:300])
    result = download(sheet, tmp_path, progress=False, client=client)
    (request,) = portal.requests("storage", "ENCFF102AAA.bam")
    assert request["range"] == "bytes=300-"
    assert (tmp_path / "ENCFF102AAA.bam").read_bytes() == blob
    assert result.files.set_index("file").loc["ENCFF102AAA.bam", "fetched"] == len(blob) - 300


def test_server_ignoring_range_restarts_cleanly(portal, client, sheet, tmp_path):
    blob = portal.blobs["ENCFF102AAA.bam"]
    (tmp_path / "ENCFF102AAA.bam.part").write_bytes(blob[:300])
    portal.ignore_range.add("ENCFF102AAA.bam")
    download(sheet, tmp_path, progress=False, client=client)
    assert (tmp_path / "ENCFF102AAA.bam").read_bytes() == blob


def test_corrupt_partial_file_gets_one_fresh_download(portal, client, sheet, tmp_path):
    blob = portal.blobs["ENCFF102AAA.bam"]
    (tmp_path / "ENCFF102AAA.bam.part").write_bytes(bytes(300))  # wrong prefix
    download(sheet, tmp_path, progress=False, client=client)
    assert [r["range"] for r in portal.requests("storage", "ENCFF102AAA.bam")] == [
        "bytes=300-",
        None,
    ]
    assert (tmp_path / "ENCFF102AAA.bam").read_bytes() == blob


def test_md5_mismatch_removes_the_file_and_says_so(portal, client, sheet, tmp_path):
    portal.corrupt.add("ENCFF102AAA.bam")
    with pytest.raises(DownloadError) as info:
        download(sheet, tmp_path, progress=False, client=client)
    message = str(info.value)
    assert "ENCFF102AAA.bam" in message and "md5" in message and "removed" in message
    assert not (tmp_path / "ENCFF102AAA.bam").exists()
    assert not (tmp_path / "ENCFF102AAA.bam.part").exists()
    assert not (tmp_path / "samplesheet.csv").exists()
    # The other files completed and stay for the next run.
    assert md5(tmp_path / "ENCFF101AAA.bam") == portal.file("ENCFF101AAA")["md5sum"]


def test_500_then_success_is_retried(portal, client, sheet, tmp_path):
    portal.fault("ENCFF101AAA.bam", ("status", 500), ("status", 503))
    download(sheet, tmp_path, progress=False, client=client)
    assert len(portal.requests("storage", "ENCFF101AAA.bam")) == 3
    assert md5(tmp_path / "ENCFF101AAA.bam") == portal.file("ENCFF101AAA")["md5sum"]


def test_persistent_500_gives_up_and_keeps_nothing_half_done(portal, client, sheet, tmp_path):
    portal.fault("ENCFF101AAA.bam", *[("status", 500)] * 10)
    with pytest.raises(DownloadError, match="ENCFF101AAA.bam: gave up after 4"):
        download(sheet, tmp_path, progress=False, client=client)
    assert len(portal.requests("storage", "ENCFF101AAA.bam")) == 4
    assert not (tmp_path / "ENCFF101AAA.bam").exists()


def test_404_is_not_retried(portal, client, sheet, tmp_path):
    sheet = sheet.copy()
    sheet.loc[0, "bam_url"] = portal.url + "/files/ENCFF000XXX/@@download/ENCFF000XXX.bam"
    with pytest.raises(DownloadError, match="HTTP 404"):
        download(sheet, tmp_path, progress=False, client=client)
    assert len(portal.requests("href", "ENCFF000XXX.bam")) == 1


def test_timeouts_are_retried(portal, sheet, tmp_path):
    client = EncodeClient(portal.url, timeout=0.3, retries=3, backoff=0, min_interval=0)
    portal.fault("ENCFF101AAA.bam", ("stall", 0.8))  # before any byte
    portal.fault("ENCFF102AAA.bam", ("stall_body", 150, 0.8))  # mid-body
    download(sheet, tmp_path, progress=False, client=client)
    assert md5(tmp_path / "ENCFF101AAA.bam") == portal.file("ENCFF101AAA")["md5sum"]
    assert md5(tmp_path / "ENCFF102AAA.bam") == portal.file("ENCFF102AAA")["md5sum"]
    ranges = [r["range"] for r in portal.requests("storage", "ENCFF102AAA.bam")]
    assert ranges == [None, "bytes=150-"]


def test_out_dir_that_is_a_file(client, sheet, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ChipviInputError, match="not a folder"):
        download(sheet, blocker, progress=False, client=client)
    with pytest.raises(ChipviInputError, match="not a writable folder"):
        download(sheet, blocker / "sub", progress=False, client=client)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_out_dir(client, sheet, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(ChipviInputError, match="not a writable folder"):
            download(sheet, locked, progress=False, client=client)
    finally:
        locked.chmod(0o700)


def test_not_enough_disk_space_fails_before_downloading(
    portal, client, sheet, tmp_path, monkeypatch
):
    monkeypatch.setattr(download_module, "_free_bytes", lambda path: 1000)
    with pytest.raises(ChipviInputError, match="Not enough disk space"):
        download(sheet, tmp_path, progress=False, client=client)
    assert portal.requests("storage") == []


def test_mixed_assemblies_in_a_sheet(client, sheet, tmp_path):
    mixed = sheet.copy()
    mixed.loc[1, "assembly"] = "hg19"
    with pytest.raises(ChipviInputError, match="mixes assemblies"):
        download(mixed, tmp_path, progress=False, client=client)


def test_malformed_sheets(client, sheet, tmp_path):
    with pytest.raises(ChipviInputError, match="bam_md5"):
        download(sheet.drop(columns=["bam_md5"]), tmp_path, progress=False, client=client)
    bad = sheet.copy()
    bad.loc[0, "bam"] = "../escape.bam"
    with pytest.raises(ChipviInputError, match="plain file name"):
        download(bad, tmp_path, progress=False, client=client)
    bad = sheet.copy()
    bad.loc[0, "bam_md5"] = "xyz"
    with pytest.raises(ChipviInputError, match="not an md5"):
        download(bad, tmp_path, progress=False, client=client)
    with pytest.raises(ChipviInputError, match="does not exist"):
        download(tmp_path / "missing.csv", tmp_path, progress=False, client=client)
    with pytest.raises(ChipviInputError, match="threads"):
        download(sheet, tmp_path, threads=0, progress=False, client=client)
    assert list(tmp_path.iterdir()) == []


def test_file_accessions_download_without_sheet(portal, client, tmp_path):
    result = download(["ENCFF911CCC", "ENCFF301AAA"], tmp_path, progress=False, client=client)
    assert result.samplesheet is None
    assert sorted(result.files["file"]) == ["ENCFF301AAA.bam", "ENCFF911CCC.bam"]
    assert md5(tmp_path / "ENCFF911CCC.bam") == portal.file("ENCFF911CCC")["md5sum"]
    with pytest.raises(ChipviInputError, match="ENCFF999ZZZ"):
        download(["ENCFF999ZZZ"], tmp_path, progress=False, client=client)
    with pytest.raises(ChipviInputError, match="several assemblies"):
        download(["ENCFF101AAA", "ENCFF103AAA"], tmp_path, progress=False, client=client)


def test_experiment_accessions_build_the_sheet(portal, client, tmp_path):
    result = download(["ENCSR300SSS"], tmp_path, progress=False, client=client)
    assert result.sheet["sample"].tolist() == ["ENCFF301AAA", "ENCFF302AAA"]
    assert (tmp_path / "samplesheet.csv").is_file()
    assert len(result.files) == 4


def test_unwritable_out_dir_is_detected_by_a_probe(client, sheet, tmp_path, monkeypatch):
    # Root ignores permission bits, so simulate a read-only file system at the probe.
    def read_only(*args, **kwargs):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(download_module.tempfile, "TemporaryFile", read_only)
    with pytest.raises(ChipviInputError, match="not a writable folder .Read-only file system"):
        download(sheet, tmp_path, progress=False, client=client)


def test_interrupt_stops_workers_and_keeps_partial_files(
    portal, client, sheet, tmp_path, monkeypatch
):
    original = download_module._fetch_one

    def interrupted(job, *args):
        if job.name == "ENCFF101AAA.bam":
            time.sleep(0.1)
            raise KeyboardInterrupt
        return original(job, *args)

    monkeypatch.setattr(download_module, "_fetch_one", interrupted)
    portal.fault("ENCFF102AAA.bam", ("stall_body", 150, 0.5))
    with pytest.raises(KeyboardInterrupt):
        download(sheet, tmp_path, threads=3, progress=False, client=client)
    assert not (tmp_path / "ENCFF102AAA.bam").exists()  # stopped, not completed
    part = tmp_path / "ENCFF102AAA.bam.part"
    assert not part.exists() or part.stat().st_size <= 150
    assert not (tmp_path / "samplesheet.csv").exists()


def test_downloaded_sheet_feeds_read_bams(client, sheet, tmp_path):
    import chipvi

    result = download(sheet, tmp_path, progress=False, client=client)
    adata = chipvi.read_bams(result.samplesheet, bin_size=1000, progress=False)
    assert adata.var_names.tolist() == ["ENCFF101AAA", "ENCFF102AAA"]
    assert adata.var["control"].tolist() == ["ENCFF902CCC", "ENCFF902CCC"]
    assert adata.var["replicate"].astype(str).tolist() == ["1", "2"]
    assert adata.var["group"].tolist() == ["ENCSR100KKK", "ENCSR100KKK"]
    # The fixture BAMs hold 40 and 50 reads; the shared control 35.
    assert adata.X.sum(axis=0).tolist() == [40, 50]
    assert adata.layers["control"].sum(axis=0).tolist() == [35, 35]
