"""ENCODE client and experiment search against the local fake portal (no internet)."""

from __future__ import annotations

import time

import pytest

from chipvi import ChipviInputError
from chipvi.io.encode import EncodeClient, EncodeError, search_experiments
from encode_fixtures.portal import running_portal


@pytest.fixture
def client(portal):
    return EncodeClient(portal.url, timeout=2, retries=3, backoff=0, min_interval=0)


def test_search_filters_and_parses_experiments(portal, client):
    found = search_experiments(target="H3K27me3", client=client)
    # Human, GRCh38, released Histone ChIP-seq H3K27me3 only: not the hg19-only GM12878
    # experiment, not the mouse one, not controls, not H3K4me3.
    assert found["accession"].tolist() == [
        "ENCSR100KKK",
        "ENCSR200HHH",
        "ENCSR300SSS",
        "ENCSR400TTT",
    ]
    row = found.set_index("accession").loc["ENCSR100KKK"]
    assert row["target"] == "H3K27me3"
    assert row["biosample"] == "K562"
    assert row["biosample_type"] == "cell line"
    assert row["possible_controls"] == ["ENCSR900CTA"]
    assert row["replicates"] == [1, 2]
    assert row["assembly"] == ["GRCh38", "hg19"]
    assert found.set_index("accession").loc["ENCSR200HHH", "possible_controls"] == []
    assert found.attrs["assembly"] == "GRCh38"
    (request,) = portal.requests("search")
    query = request["query"]
    assert query["type"] == ["Experiment"]
    assert query["target.label"] == ["H3K27me3"]
    assert query["assay_title"] == ["Histone ChIP-seq"]
    assert query["replicates.library.biosample.donor.organism.scientific_name"] == ["Homo sapiens"]
    assert query["limit"] == ["all"] and query["format"] == ["json"]
    assert "possible_controls" in query["field"]


def test_search_biosample_list_assay_and_limit(client):
    tf = search_experiments(target="CTCF", assay="TF ChIP-seq", biosample="K562", client=client)
    assert tf["accession"].tolist() == ["ENCSR600TFX"]
    two = search_experiments(target="H3K27me3", biosample=["K562", "spleen"], client=client)
    assert two["accession"].tolist() == ["ENCSR100KKK", "ENCSR300SSS"]
    mouse = search_experiments(
        target="H3K27me3", organism="Mus musculus", assembly="mm10", client=client
    )
    assert mouse["accession"].tolist() == ["ENCSR800MUS"]
    assert len(search_experiments(target="H3K27me3", limit=2, client=client)) == 2
    with pytest.raises(ChipviInputError, match="limit"):
        search_experiments(target="H3K27me3", limit=0, client=client)


def test_unknown_target_suggests_close_matches(client):
    with pytest.raises(ChipviInputError) as info:
        search_experiments(target="H3K27me", client=client)
    message = str(info.value)
    assert "target 'H3K27me'" in message
    assert "Did you mean: H3K27me3" in message


def test_wrong_case_target_is_pointed_out(client):
    with pytest.raises(ChipviInputError, match="Did you mean: H3K27me3"):
        search_experiments(target="h3k27me3", client=client)


def test_unknown_biosample_suggests_close_matches(client):
    with pytest.raises(ChipviInputError) as info:
        search_experiments(target="H3K27me3", biosample="K5622", client=client)
    assert "biosample 'K5622'" in str(info.value)
    assert "K562" in str(info.value)


def test_known_values_without_common_experiments_list_alternatives(client):
    # H3K4me3 and spleen both exist, but not together.
    with pytest.raises(ChipviInputError) as info:
        search_experiments(target="H3K4me3", biosample="spleen", client=client)
    message = str(info.value)
    assert "No ENCODE experiments match" in message
    assert "K562 (1)" in message  # the biosample that does have H3K4me3


def test_html_instead_of_json_is_a_clear_error(portal, client):
    portal.html = True
    with pytest.raises(EncodeError, match="HTML page instead of JSON"):
        search_experiments(target="H3K27me3", client=client)
    assert len(portal.requests("search")) == 1  # not retried


def test_server_errors_are_retried(portal, client):
    portal.fault("search", ("status", 500), ("status", 503))
    found = search_experiments(target="H3K27me3", client=client)
    assert len(found) == 4
    assert len(portal.requests("search")) == 3


def test_persistent_server_error_gives_up_after_retries(portal, client):
    portal.fault("search", *[("status", 502)] * 10)
    with pytest.raises(EncodeError, match="after 4 attempts"):
        search_experiments(target="H3K27me3", client=client)
    assert len(portal.requests("search")) == 4


def test_timeout_is_retried(portal):
    client = EncodeClient(portal.url, timeout=0.3, retries=2, backoff=0, min_interval=0)
    portal.fault("search", ("stall", 0.8))
    start = time.monotonic()
    found = search_experiments(target="H3K27me3", client=client)
    assert len(found) == 4
    assert len(portal.requests("search")) == 2
    assert time.monotonic() - start < 5


def test_client_error_is_not_retried(portal, client):
    portal.fault("search", ("status", 403))
    with pytest.raises(EncodeError, match="HTTP 403"):
        client.search({"type": "Experiment"})
    assert len(portal.requests("search")) == 1


def test_base_url_from_environment(portal, monkeypatch):
    monkeypatch.setenv("CHIPVI_ENCODE_URL", portal.url + "/")
    client = EncodeClient(min_interval=0)
    assert client.base_url == portal.url
    assert client.url("/files/X/@@download/X.bam") == portal.url + "/files/X/@@download/X.bam"
    monkeypatch.setenv("CHIPVI_ENCODE_URL", "encodeproject.org")
    with pytest.raises(EncodeError, match="CHIPVI_ENCODE_URL"):
        EncodeClient()


def test_unreachable_portal_fails_after_bounded_retries(monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    with running_portal() as fake:
        url = fake.url
    # The server is stopped: connections are refused.
    client = EncodeClient(url, timeout=1, retries=2, backoff=0, min_interval=0)
    with pytest.raises(EncodeError, match="after 3 attempts"):
        search_experiments(target="H3K27me3", client=client)


def test_client_rejects_bad_settings():
    with pytest.raises(ChipviInputError, match="retries"):
        EncodeClient("http://127.0.0.1:1", retries=-1)
