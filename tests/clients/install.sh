#!/usr/bin/env bash
# Installs the external clients the tests drive, each into its own folder under .tools/
# (or $BATCHYARD_TOOLS). Idempotent: a tool whose folder is complete is skipped.
set -euo pipefail
cd "$(dirname "$0")/../.."
TOOLS="${BATCHYARD_TOOLS:-$PWD/.tools}"
mkdir -p "$TOOLS"

# Old azure-batch SDKs (msrest generation, `BatchServiceClient`), as Azure's samples pin
# them: 6.0.0 (api-version 2018-12-01.8.0, the oldest served, with maxTasksPerNode),
# 11.0.0 (the Python quickstart's pin, 2021-06-01.14.0) and 14.2.0 (2024-02-01.19.0).
install_azure_batch() {  # folder version
    local dir="$TOOLS/$1"
    [ -f "$dir/.complete" ] && return 0
    rm -rf "$dir"
    python3 -m venv "$dir"
    "$dir/bin/pip" install --quiet --disable-pip-version-check "azure-batch==$2" "msrestazure>=0.6.4"
    touch "$dir/.complete"
}
install_azure_batch azure-batch-6 6.0.0
install_azure_batch azure-batch-11 11.0.0
install_azure_batch azure-batch-14 14.2.0

# The Azure CLI (tests/test_az_cli.py), in its own virtual environment.
if [ ! -f "$TOOLS/az/.complete" ]; then
    rm -rf "$TOOLS/az"
    python3 -m venv "$TOOLS/az"
    "$TOOLS/az/bin/pip" install --quiet --disable-pip-version-check 'azure-cli>=2.60'
    touch "$TOOLS/az/.complete"
fi

# --- node: the Node.js Batch SDK (@azure/batch), unchanged from npm ---------------------
# Its SharedKey credentials come with it; @azure/identity is not needed for them.
if [ ! -f "$TOOLS/node/.complete" ]; then
    command -v npm >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null; }
    rm -rf "$TOOLS/node" && mkdir -p "$TOOLS/node"
    (cd "$TOOLS/node" && npm init -y >/dev/null && npm install --silent --no-audit --no-fund @azure/batch >/dev/null)
    touch "$TOOLS/node/.complete"
fi

# --- azurite: Azure Storage's emulator (npm `azurite`), the storage account of the storage
# tests (tests/azurite.py starts its blob service on a free loopback port).
if [ ! -f "$TOOLS/azurite/.complete" ]; then
    command -v npm >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null; }
    rm -rf "$TOOLS/azurite" && mkdir -p "$TOOLS/azurite"
    (cd "$TOOLS/azurite" && npm init -y >/dev/null && npm install --silent --no-audit --no-fund 'azurite@^3' >/dev/null)
    touch "$TOOLS/azurite/.complete"
fi
