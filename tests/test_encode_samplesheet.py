"""ENCODE experiments → sample sheet: control pairing, replicates, explained skips."""

from __future__ import annotations

import pytest

from chipvi import ChipviInputError
from chipvi.io.encode import EncodeClient, build_samplesheet, search_experiments


@pytest.fixture
def client(portal):
    return EncodeClient(portal.url, timeout=2, retries=2, backoff=0, min_interval=0)


@pytest.fixture
def sheet(client):
    experiments = search_experiments(target="H3K27me3", client=client)
    with pytest.warns(UserWarning, match="skipped 8"):
        return build_samplesheet(experiments, client=client)


def test_contract_columns_first_and_one_row_per_replicate_bam(sheet):
    assert list(sheet.columns[:6]) == ["sample", "bam", "control", "target", "group", "replicate"]
    assert sheet["sample"].tolist() == ["ENCFF101AAA", "ENCFF102AAA", "ENCFF301AAA", "ENCFF302AAA"]
    assert sheet["sample"].is_unique
    assert (sheet["target"] == "H3K27me3").all()
    assert (sheet["assembly"] == "GRCh38").all()
    # Replicate = the BAM's ENCODE biological replicate number; group = experiment.
    assert sheet["replicate"].tolist() == [1, 2, 1, 2]
    assert sheet["group"].tolist() == ["ENCSR100KKK", "ENCSR100KKK", "ENCSR300SSS", "ENCSR300SSS"]
    assert sheet["bam"].tolist() == [f"{s}.bam" for s in sheet["sample"]]


def test_control_pairing_rules(portal, sheet):
    by_sample = sheet.set_index("sample")
    # 1) controlled_by on the ChIP BAM wins over replicate matching (it names rep-2's control).
    assert by_sample.loc["ENCFF101AAA", "control_accession"] == "ENCFF902CCC"
    assert by_sample.loc["ENCFF101AAA", "control_match"] == "controlled_by"
    # 2) same biological replicate in the possible_controls experiment.
    assert by_sample.loc["ENCFF102AAA", "control_accession"] == "ENCFF902CCC"
    assert by_sample.loc["ENCFF102AAA", "control_match"] == "replicate"
    assert by_sample.loc["ENCFF301AAA", "control_accession"] == "ENCFF911CCC"
    # 3) no same-replicate control (the control has reps 1 and 3): the largest control BAM.
    assert by_sample.loc["ENCFF302AAA", "control_accession"] == "ENCFF912CCC"
    assert by_sample.loc["ENCFF302AAA", "control_match"] == "largest"
    assert portal.file("ENCFF912CCC")["file_size"] > portal.file("ENCFF911CCC")["file_size"]
    # The control's hg19 BAM is never used for GRCh38 ChIP.
    assert "ENCFF903CCC" not in set(sheet["control_accession"])
    assert by_sample.loc["ENCFF302AAA", "control"] == "ENCFF912CCC.bam"
    assert by_sample.loc["ENCFF302AAA", "control_experiment"] == "ENCSR910CTB"


def test_accession_md5_size_and_url_columns(portal, sheet):
    row = sheet.set_index("sample").loc["ENCFF102AAA"]
    meta = portal.file("ENCFF102AAA")
    assert row["bam_md5"] == meta["md5sum"]
    assert row["bam_size"] == meta["file_size"]
    assert row["bam_url"] == portal.url + meta["href"]
    control = portal.file("ENCFF902CCC")
    assert row["control_md5"] == control["md5sum"]
    assert row["control_size"] == control["file_size"]


def test_every_skip_is_explained(sheet):
    skipped = sheet.attrs["skipped"].set_index("accession")["reason"]
    assert "hg19" in skipped["ENCFF103AAA"]
    assert "pooled from biological replicates 1, 2" == skipped["ENCFF104AAA"]
    assert "archived" in skipped["ENCFF105AAA"]
    assert "ENCFF102AAA" in skipped["ENCFF106AAA"]  # preferred_default beats the newer one
    assert "no possible_controls" in skipped["ENCFF201AAA"]
    assert "ENCSR920CTC" in skipped["ENCFF401AAA"] and "GRCh38" in skipped["ENCFF401AAA"]


def test_keep_experiments_without_control_on_request(client):
    with pytest.warns(UserWarning):
        sheet = build_samplesheet(
            ["ENCSR200HHH", "ENCSR100KKK"], assembly="GRCh38", require_control=False, client=client
        )
    row = sheet.set_index("sample").loc["ENCFF201AAA"]
    assert row["control"] == "" and row["control_size"] == 0 and row["control_match"] == ""
    assert len(sheet) == 3


def test_group_by_biosample(client):
    with pytest.warns(UserWarning):
        sheet = build_samplesheet(
            ["ENCSR100KKK", "ENCSR300SSS"], assembly="GRCh38", group_by="biosample", client=client
        )
    assert sheet.set_index("sample")["group"].to_dict() == {
        "ENCFF101AAA": "K562",
        "ENCFF102AAA": "K562",
        "ENCFF301AAA": "spleen",
        "ENCFF302AAA": "spleen",
    }
    with pytest.raises(ChipviInputError, match="group_by"):
        build_samplesheet(["ENCSR100KKK"], group_by="donor", client=client)


def test_nothing_left_without_controls_is_an_error(client):
    with pytest.raises(ChipviInputError) as info:
        build_samplesheet(["ENCSR200HHH"], client=client)
    assert "no possible_controls" in str(info.value)
    assert "require_control=False" in str(info.value)


def test_mixed_assemblies_need_a_choice(client):
    with pytest.raises(ChipviInputError) as info:
        build_samplesheet(["ENCSR100KKK", "ENCSR700HGX"], client=client)
    message = str(info.value)
    assert "GRCh38" in message and "hg19" in message and "assembly=" in message
    with pytest.warns(UserWarning):
        hg19 = build_samplesheet(["ENCSR100KKK", "ENCSR700HGX"], assembly="hg19", client=client)
    assert set(hg19["sample"]) == {"ENCFF103AAA", "ENCFF701AAA"}
    assert hg19.set_index("sample").loc["ENCFF103AAA", "control_accession"] == "ENCFF903CCC"


def test_dataframe_saved_as_csv_still_works(client, tmp_path):
    experiments = search_experiments(target="H3K27me3", biosample="spleen", client=client)
    path = tmp_path / "experiments.csv"
    experiments.to_csv(path, index=False)
    import pandas as pd

    reloaded = pd.read_csv(path)  # possible_controls is now the string "['ENCSR910CTB']"
    sheet = build_samplesheet(reloaded, assembly="GRCh38", client=client)
    assert sheet["control_accession"].tolist() == ["ENCFF911CCC", "ENCFF912CCC"]


def test_unknown_experiment_accession(client):
    with pytest.raises(ChipviInputError, match="ENCSR999ZZZ"):
        build_samplesheet(["ENCSR999ZZZ"], client=client)
    with pytest.raises(ChipviInputError, match="Not ENCODE experiment accessions"):
        build_samplesheet(["not an accession"], client=client)


def test_assembly_that_no_bam_has(client):
    with pytest.raises(ChipviInputError) as info:
        build_samplesheet(["ENCSR300SSS"], assembly="hg38", client=client)
    assert "'hg38'" in str(info.value) and "GRCh38 (2 BAMs)" in str(info.value)
