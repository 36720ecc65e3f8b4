#!/usr/bin/env bash
# Protect the photos found under a folder, passing their paths NUL-separated on stdin (any file
# name survives, spaces and newlines included), and print one line per protected photo from the
# JSON report with jq. Exit code: unlearn's (0 all protected, 1 some failed, 2 setup error).
# Usage: examples/pipeline_find.sh SOURCE_FOLDER OUTPUT_FOLDER [SURROGATE]
set -euo pipefail
source=${1:?usage: $0 SOURCE_FOLDER OUTPUT_FOLDER [SURROGATE]}
out=${2:?usage: $0 SOURCE_FOLDER OUTPUT_FOLDER [SURROGATE]}
surrogate=${3:-${UNLEARN_SURROGATE:-lfw}}
find "$source" -type f \( -iname '*.jpg' -o -iname '*.jpeg' -o -iname '*.heic' \) -print0 |
  unlearn protect - -0 --out "$out" --surrogate "$surrogate" --json --quiet |
  jq -r '.photos[] | "\(.source) -> \(.output)  L-inf \(.budget.linf)  PSNR \(.budget.psnr)"'
