#!/usr/bin/env bash
# Debian packages the tests need, installed with apt when one is missing (CI runs as root):
#   fakechroot             the machine fallback for hosts without namespaces
#   nftables               outbound NAT for machines
#   docker-registry, skopeo, busybox-static, apache2-utils
#                          container tests: a real registry (htpasswd from apache2-utils),
#                          images built from busybox-static's binary and pushed with skopeo
#   chromium               the portal's browser tests (Playwright downloads no browser)
set -euo pipefail
missing=0
for tool in fakechroot nft docker-registry skopeo htpasswd chromium; do
    command -v "$tool" >/dev/null || missing=1
done
test -x /bin/busybox || missing=1
if [ "$missing" = 1 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fakechroot nftables docker-registry skopeo \
        busybox-static apache2-utils chromium >/dev/null
fi
