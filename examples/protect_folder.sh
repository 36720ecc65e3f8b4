#!/usr/bin/env bash
# Protect one person's folder of photos and show the budget report.
# Usage: examples/protect_folder.sh ./photos [surrogate]
#   surrogate: a <class>/<image> folder (offline), or a name such as lfw (downloaded once).
set -euo pipefail
photos=${1:?usage: $0 PHOTOS_FOLDER [SURROGATE]}
surrogate=${2:-${UNLEARN_SURROGATE:-lfw}}
unlearn protect "$photos" --eps 8 --surrogate "$surrogate"
echo "protected copies are in ${photos%/}-protected/"
