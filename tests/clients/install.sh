#!/usr/bin/env bash
# Installs the clients that tests drive but pip's '.[test]' does not bring, each into its own
# folder under .tools/ at the repository root (or $BATCHYARD_TOOLS). Idempotent: a tool whose
# folder is complete (it holds a .complete marker) is skipped.
set -euo pipefail
cd "$(dirname "$0")/../.."
TOOLS="${BATCHYARD_TOOLS:-$PWD/.tools}"
mkdir -p "$TOOLS"

complete() { [ -f "$TOOLS/$1/.complete" ]; }

# The Azure CLI, in its own virtual environment (tests/test_az_cli.py).
if ! complete az; then
    rm -rf "$TOOLS/az"
    python3 -m venv "$TOOLS/az"
    "$TOOLS/az/bin/pip" install --quiet --upgrade pip
    "$TOOLS/az/bin/pip" install --quiet 'azure-cli>=2.60'
    touch "$TOOLS/az/.complete"
fi
