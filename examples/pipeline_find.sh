#!/usr/bin/env bash
# Protect the JPEGs found under a folder, reading the list of paths from stdin, and print one
# line per protected photo from the JSON report with jq.
# Usage: examples/pipeline_find.sh SOURCE_FOLDER OUTPUT_FOLDER [SURROGATE]
set -euo pipefail
source=${1:?usage: $0 SOURCE_FOLDER OUTPUT_FOLDER [SURROGATE]}
out=${2:?usage: $0 SOURCE_FOLDER OUTPUT_FOLDER [SURROGATE]}
surrogate=${3:-${UNLEARN_SURROGATE:-lfw}}
find "$source" -type f \( -iname '*.jpg' -o -iname '*.jpeg' \) |
  unlearn protect - --out "$out" --surrogate "$surrogate" --json --quiet |
  jq -r '.photos[] | "\(.source) -> \(.output)  L-inf \(.budget.linf)  PSNR \(.budget.psnr)"'
