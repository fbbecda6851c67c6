#!/usr/bin/env bash
# Installs the client tools the tests drive that pip's `.[test]` does not bring, each into
# its own folder under .tools/ (or $BATCHYARD_TOOLS). Idempotent: a complete folder is kept.
set -euo pipefail
cd "$(dirname "$0")/../.."
TOOLS="${BATCHYARD_TOOLS:-$PWD/.tools}"
mkdir -p "$TOOLS"

# --- node: the Node.js Batch SDK (@azure/batch), unchanged from npm ---------------------
# Its SharedKey credentials come with it; @azure/identity is not needed for them.
if [ ! -f "$TOOLS/node/.complete" ]; then
    command -v npm >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null; }
    rm -rf "$TOOLS/node" && mkdir -p "$TOOLS/node"
    (cd "$TOOLS/node" && npm init -y >/dev/null && npm install --silent --no-audit --no-fund @azure/batch >/dev/null)
    touch "$TOOLS/node/.complete"
fi
