#!/usr/bin/env bash
# Installs the peer tools the benchmarks compare against. Benchmark environment only: the chipvi
# library never shells out to these.
set -euo pipefail
apt-get update -qq
apt-get install -y -qq mosdepth libhts-dev samtools bedtools
pip install -q macs3 deeptools
