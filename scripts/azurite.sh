#!/usr/bin/env bash
# Install (npm ci, from package-lock.json) and/or run the Azurite Storage emulator for local
# development: `func start` with AzureWebJobsStorage=UseDevelopmentStorage=true expects it on
# 127.0.0.1:10000-10002. Tests do not need this script: the `azurite` pytest fixture starts its
# own emulator on free ports.
#
#   scripts/azurite.sh install   # npm ci unless node_modules/.bin/azurite is already there
#   scripts/azurite.sh start     # install if needed, then run in the foreground (Ctrl-C stops)
set -euo pipefail
cd "$(dirname "$0")/.."

AZURITE=node_modules/.bin/azurite

install() {
    if [[ ! -x "$AZURITE" ]]; then
        npm ci --no-audit --no-fund
    fi
}

case "${1:-start}" in
    install)
        install
        ;;
    start)
        install
        # --disableTelemetry: otherwise Azurite reports usage to an outside host.
        # --inMemoryPersistence: nothing written to disk; data is gone when it stops.
        exec "$AZURITE" --silent --inMemoryPersistence --skipApiVersionCheck --disableTelemetry \
            --loose --blobHost 127.0.0.1 --queueHost 127.0.0.1 --tableHost 127.0.0.1
        ;;
    *)
        echo "usage: $0 [install|start]" >&2
        exit 2
        ;;
esac
