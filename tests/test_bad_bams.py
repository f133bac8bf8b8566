"""BAM-side inputs the bad-input table lists: CRAM, chromosomes without reads, empty libraries."""

from __future__ import annotations

import numpy as np
import pysam
import pytest

from _bam_factory import Read, write_bam
from chipvi import ChipviInputError, read_bams
from chipvi.io import read_bam_bins

CONTIGS = [("c1", 2000), ("c2", 1500), ("c3", 1000)]


@pytest.fixture
def folder(tmp_path):
    chip = [Read("c1", 100 + 10 * i) for i in range(30)] + [Read("c3", 50)]
    write_bam(tmp_path / "chip.bam", chip, CONTIGS)
    write_bam(tmp_path / "ctl.bam", [Read("c1", 500), Read("c1", 900)], CONTIGS)
    write_bam(tmp_path / "empty.bam", [], CONTIGS)
    return tmp_path


def _sheet(folder, *rows: str):
    path = folder / "sheet.csv"
    path.write_text("sample,bam,control,target,group,replicate\n" + "\n".join(rows) + "\n")
    return path


def test_cram_is_named_with_the_conversion(folder):
    fasta = folder / "ref.fa"
    fasta.write_text("".join(f">{name}\n{'ACGT' * (n // 4)}\n" for name, n in CONTIGS))
    pysam.faidx(str(fasta))
    cram = folder / "chip.cram"
    with (
        pysam.AlignmentFile(str(folder / "chip.bam"), "rb") as src,
        pysam.AlignmentFile(str(cram), "wc", template=src, reference_filename=str(fasta)) as out,
    ):
        for read in src:
            out.write(read)
    assert cram.read_bytes()[:4] == b"CRAM"
    with pytest.raises(ChipviInputError, match=r"chip.cram is a CRAM file; chipvi reads BAM") as e:
        read_bam_bins(cram)
    assert "samtools view -b -T reference.fa -o chip.bam chip.cram" in str(e.value)
    with pytest.raises(ChipviInputError, match="is a CRAM file"):
        read_bams(_sheet(folder, "a,chip.cram,ctl.bam,T,g,1"), progress=False)


def test_chromosome_without_reads_keeps_its_bins_at_zero(folder):
    adata = read_bams(_sheet(folder, "a,chip.bam,ctl.bam,T,g,1"), bin_size=100, progress=False)
    assert adata.obs["chrom"].value_counts().to_dict() == {"c1": 20, "c2": 15, "c3": 10}
    on_c2 = (adata.obs["chrom"] == "c2").to_numpy()
    x, control = np.asarray(adata.X), np.asarray(adata.layers["control"])
    assert x[on_c2].sum() == 0 and control[on_c2].sum() == 0
    assert (np.asarray(adata.layers["mapq"])[on_c2] == 0).all()
    assert x.sum() == 31 and control.sum() == 2


def test_library_without_reads_is_named(folder):
    sheet = _sheet(folder, "a,chip.bam,ctl.bam,T,g,1", "b,empty.bam,ctl.bam,T,g,2")
    with pytest.raises(ChipviInputError, match=r"No reads of .*empty.bam were counted on c1, c2"):
        read_bams(sheet, progress=False)
