"""Write tiny BAM files with chosen reads for tests (pysam), and a random read generator."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pysam


@dataclass
class Read:
    """One alignment record; ``flag`` bits as in the SAM specification."""

    chrom: str | None
    pos: int
    flag: int = 0
    mapq: int = 60
    cigar: str = "50M"
    mate_chrom: str | None = None
    mate_pos: int = -1
    tlen: int = 0
    name: str = "r"
    tags: tuple = ()


def write_bam(
    path: str | Path,
    reads: list[Read],
    contigs: list[tuple[str, int]],
    *,
    sort_order: str | None = "coordinate",
    sort: bool = True,
    index: bool = True,
) -> Path:
    """Write ``reads`` to ``path`` (sorted by coordinate unless ``sort=False``), then index.

    ``sort_order`` goes to the header's ``@HD SO`` field (None: no ``@HD`` line).
    """
    path = Path(path)
    header: dict = {"SQ": [{"SN": n, "LN": int(ln)} for n, ln in contigs]}
    if sort_order is not None:
        header["HD"] = {"VN": "1.6", "SO": sort_order}
    tid = {n: i for i, (n, _) in enumerate(contigs)}
    if sort:
        # Coordinate order; unplaced reads (no chromosome) last, as samtools sort does.
        reads = sorted(reads, key=lambda r: (tid[r.chrom] if r.chrom else len(tid), r.pos))
    with pysam.AlignmentFile(str(path), "wb", header=header) as out:
        for i, r in enumerate(reads):
            a = pysam.AlignedSegment(out.header)
            a.query_name = f"{r.name}{i}"
            a.flag = r.flag
            a.reference_id = tid[r.chrom] if r.chrom else -1
            a.reference_start = r.pos
            a.mapping_quality = r.mapq
            a.cigarstring = r.cigar if r.cigar else None
            qlen = a.infer_query_length() if r.cigar else 20
            a.query_sequence = "ACGT" * (qlen // 4) + "A" * (qlen % 4)
            a.query_qualities = pysam.qualitystring_to_array("I" * qlen)
            mate = (
                r.mate_chrom if r.mate_chrom is not None else (r.chrom if r.mate_pos >= 0 else None)
            )
            a.next_reference_id = tid[mate] if mate else -1
            a.next_reference_start = r.mate_pos
            a.template_length = r.tlen
            if r.tags:
                a.set_tags(list(r.tags))
            out.write(a)
    if index:
        pysam.index(str(path))
    return path


def random_reads(
    rng: np.random.Generator,
    contigs: list[tuple[str, int]],
    n: int,
    *,
    paired: bool = False,
) -> list[Read]:
    """``n`` reads (or ``n`` pairs) with a mix of strands, CIGARs, MAPQs and flags.

    Positions include both chromosome ends, so fragment centres get clamped; flags include
    duplicates, secondary, supplementary, QC-fail and unmapped records, and (for ``paired``)
    improper pairs, pairs with an unmapped mate and pairs spanning chromosomes.
    """
    cigars = ["50M", "10S40M", "20M5D30M", "25M300N25M", "30M2I18M", "36M", "5H45M"]
    reads: list[Read] = []
    names = [c for c, _ in contigs]
    lengths = dict(contigs)

    def pos_on(chrom: str) -> int:
        length = lengths[chrom]
        # A quarter of reads near an end, to exercise clamping.
        if rng.random() < 0.25:
            return (
                int(rng.integers(0, min(150, length - 1)))
                if rng.random() < 0.5
                else int(rng.integers(max(0, length - 150), length - 1))
            )
        return int(rng.integers(0, length - 1))

    def extra_flags() -> int:
        flag = 0
        u = rng.random()
        if u < 0.05:
            flag |= 0x100
        elif u < 0.08:
            flag |= 0x800
        elif u < 0.10:
            flag |= 0x200
        if rng.random() < 0.1:
            flag |= 0x400
        return flag

    for i in range(n):
        chrom = names[int(rng.integers(len(names)))]
        mapq = int(rng.choice([0, 1, 3, 10, 30, 42, 60, 255]))
        cigar = cigars[int(rng.integers(len(cigars)))]
        if not paired:
            flag = (0x10 if rng.random() < 0.5 else 0) | extra_flags()
            if rng.random() < 0.03:
                reads.append(Read(chrom, pos_on(chrom), flag=0x4, mapq=0, cigar="", name=f"u{i}_"))
                continue
            reads.append(Read(chrom, pos_on(chrom), flag=flag, mapq=mapq, cigar=cigar))
            continue
        p1 = pos_on(chrom)
        frag = int(rng.integers(60, 600))
        p2 = min(max(p1 + frag - 50, 0), lengths[chrom] - 1)
        kind = rng.random()
        name = f"p{i}_"
        if kind < 0.7:
            # Proper pair, either mate first in the fragment.
            left, right = (p1, p2) if p1 <= p2 else (p2, p1)
            tlen = right + 50 - left
            first_is_read1 = rng.random() < 0.5
            f1 = 0x1 | 0x2 | 0x20 | (0x40 if first_is_read1 else 0x80) | extra_flags()
            f2 = 0x1 | 0x2 | 0x10 | (0x80 if first_is_read1 else 0x40)
            reads.append(Read(chrom, left, f1, mapq, "50M", chrom, right, tlen, name))
            reads.append(Read(chrom, right, f2, mapq, "50M", chrom, left, -tlen, name))
        elif kind < 0.85:
            # Improper pair (e.g. wrong orientation): both mates mapped.
            f1 = 0x1 | 0x40 | (0x10 if rng.random() < 0.5 else 0) | extra_flags()
            f2 = 0x1 | 0x80 | (0x10 if rng.random() < 0.5 else 0)
            reads.append(Read(chrom, p1, f1, mapq, cigar, chrom, p2, p2 - p1, name))
            reads.append(Read(chrom, p2, f2, mapq, "50M", chrom, p1, p1 - p2, name))
        elif kind < 0.93:
            # One mate unmapped (placed at its mate's position, as aligners do).
            mapped_is_read1 = rng.random() < 0.5
            fm = (
                0x1
                | 0x8
                | (0x40 if mapped_is_read1 else 0x80)
                | (0x10 if rng.random() < 0.5 else 0)
            )
            fu = 0x1 | 0x4 | (0x80 if mapped_is_read1 else 0x40)
            reads.append(Read(chrom, p1, fm, mapq, cigar, chrom, p1, 0, name))
            reads.append(Read(chrom, p1, fu, 0, "", chrom, p1, 0, name))
        else:
            # Mates on different chromosomes (flagged proper by a sloppy aligner).
            other = names[(names.index(chrom) + 1) % len(names)]
            q = pos_on(other)
            reads.append(Read(chrom, p1, 0x1 | 0x2 | 0x40, mapq, cigar, other, q, 0, name))
            reads.append(Read(other, q, 0x1 | 0x2 | 0x80 | 0x10, mapq, "50M", chrom, p1, 0, name))
    return reads
