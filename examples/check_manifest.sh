#!/usr/bin/env bash
# Read a protect manifest with jq: totals, the surrogate classes matched to each protected
# class, and the surrogate's accuracy per round. Exits 1 if any photo failed or broke the budget.
# Usage: examples/check_manifest.sh PROTECTED_FOLDER
set -euo pipefail
manifest=${1:?usage: $0 PROTECTED_FOLDER}/unlearn-manifest.json
jq '.totals' "$manifest"
jq -r '.surrogate.ranking | to_entries[] | "\(.key): nearest \(.value[0:3] | map(.class) | join(", "))"' "$manifest"
jq -r '.optimisation.rounds[] | "round \(.round): surrogate accuracy \(.protected_accuracy)"' "$manifest"
jq -e '.totals.failed == 0 and .totals.max_linf <= .settings.eps' "$manifest" > /dev/null
