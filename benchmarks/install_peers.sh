#!/usr/bin/env bash
# Installs the peer tools the benchmarks compare against (run from the repository root, as
# root). Benchmark environment only: the chipvi library never shells out to these. Python peers
# are pinned in benchmarks/requirements-peers.txt; the Debian tools come from the release's
# packages (benchmarks print every version in their tables).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
apt-get update
apt-get install -y mosdepth libhts-dev samtools bedtools
pip install -r "$here/requirements-peers.txt"
