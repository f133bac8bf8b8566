import chipvi


def test_version_and_public_api():
    assert chipvi.__version__
    for name in ("io", "pp", "tl", "pl", "datasets", "read_bams", "read_samplesheet"):
        assert hasattr(chipvi, name), name
