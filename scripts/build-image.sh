#!/usr/bin/env bash
# Build the mailstack container image without Docker: podman + a local Debian base.
#
# Usage: scripts/build-image.sh [TAG]        (default tag: localhost/mailstack:dev)
#
# Works on a fresh Debian 12 as root. Steps:
#   1. apt-get install podman buildah mmdebstrap runc (only what is missing);
#   2. write a containers.conf (runtime runc, ulimits within the host's hard limits) into
#      $MAILSTACK_CONTAINERS_STATE (default /var/tmp/mailstack-containers) and use it through
#      CONTAINERS_CONF; callers that run the image should export the same CONTAINERS_CONF;
#   3. build a slim bookworm base rootfs with mmdebstrap from the Debian mirror apt already uses,
#      import it as localhost/mailstack-base:bookworm (skipped when that image exists);
#   4. podman build deploy/Dockerfile with the repository root as build context.
#
# Environment:
#   MAILSTACK_BASE_REBUILD=1    rebuild the base image even if it exists
#   MAILSTACK_CONTAINERS_STATE  where containers.conf and the base tarball are written
#   MAILSTACK_BUILD_ARGS        extra arguments for `podman build` (e.g. --no-cache)
set -euo pipefail

TAG="${1:-localhost/mailstack:dev}"
BASE="localhost/mailstack-base:bookworm"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="${MAILSTACK_CONTAINERS_STATE:-/var/tmp/mailstack-containers}"

log() { printf '[build-image] %s\n' "$*" >&2; }
now() { date +%s; }
started=$(now)

# 1. Tools ---------------------------------------------------------------------------------
missing=()
for tool in podman:podman buildah:buildah mmdebstrap:mmdebstrap runc:runc; do
    command -v "${tool%%:*}" >/dev/null 2>&1 || missing+=("${tool##*:}")
done
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        log "missing ${missing[*]} and not root: install them first"; exit 1
    fi
    log "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
        --no-install-recommends "${missing[@]}" >/dev/null
    # podman's rootful networking comes from recommends in bookworm; make sure it is there.
    command -v netavark >/dev/null 2>&1 || [[ -x /usr/lib/podman/netavark ]] || \
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
            netavark aardvark-dns >/dev/null || true
fi

# 2. containers.conf -----------------------------------------------------------------------
# crun cannot run on a cgroup v1 hybrid host ("cgroups in hybrid mode not supported"), and
# podman's default rlimits (~1M) exceed the hard limits of a host without CAP_SYS_RESOURCE.
mkdir -p "$STATE"
cat >"$STATE/containers.conf" <<'CONF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
CONF
export CONTAINERS_CONF="$STATE/containers.conf"
log "CONTAINERS_CONF=$CONTAINERS_CONF"

# 3. Base image ----------------------------------------------------------------------------
apt_uri_for() {
    # The URI apt on this machine uses for suite $1: deb822 .sources files, then one-line lists.
    local suite=$1 uri
    uri=$(awk -v suite="$suite" '
        /^[[:space:]]*$/ { if (found && uri != "") { print uri; exit } found = 0; uri = ""; next }
        /^URIs:/ { uri = $2 }
        /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == suite) found = 1 }
        END { if (found && uri != "") print uri }' /etc/apt/sources.list.d/*.sources 2>/dev/null |
        head -n1 || true)
    if [[ -z "$uri" ]]; then
        uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
            awk -v suite="$suite" '$1 == "deb" {
                for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) { u = $i; s = $(i + 1); break }
                if (s == suite) { print u; exit } }' || true)
    fi
    echo "$uri"
}

if [[ "${MAILSTACK_BASE_REBUILD:-0}" != 1 ]] && podman image exists "$BASE"; then
    log "base image $BASE exists (MAILSTACK_BASE_REBUILD=1 rebuilds it)"
else
    mirror=$(apt_uri_for bookworm)
    mirror=${mirror:-http://deb.debian.org/debian}
    sources=("$mirror" "deb $mirror bookworm-updates main")
    security=$(apt_uri_for bookworm-security)
    [[ -n "$security" ]] && sources+=("deb $security bookworm-security main")
    log "building $BASE with mmdebstrap from $mirror"
    tarball="$STATE/bookworm-slim.tar"
    # Slim: no man pages, docs (except copyright) or locales, now and in later apt installs
    # (the dpkg path excludes persist in /etc/dpkg/dpkg.cfg.d). No apt lists in the image.
    mmdebstrap --quiet --variant=minbase --include=ca-certificates \
        --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        --dpkgopt='path-include=/usr/share/locale/locale.alias' \
        --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/info/*' \
        --customize-hook='rm -rf "$1"/var/cache/apt/*.bin "$1"/var/lib/apt/lists/*' \
        bookworm "$tarball" "${sources[@]}"
    podman import --quiet --change 'CMD ["/bin/bash"]' "$tarball" "$BASE" >/dev/null
    rm -f "$tarball"
fi

# 4. The image -----------------------------------------------------------------------------
log "building $TAG"
# pip in the build trusts the host's CA bundle too (a TLS-inspecting proxy's CA lives only
# there); it is bind-mounted for the RUN steps and not stored in the image.
bundle="${PIP_CERT:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}"
ca_args=()
if [[ -r "$bundle" ]]; then
    ca_args=(-v "$bundle:/run/build-ca-bundle.crt:ro" --build-arg BUILD_CA_BUNDLE=/run/build-ca-bundle.crt)
fi
# --format docker: the OCI image format has no HEALTHCHECK.
# shellcheck disable=SC2086  # MAILSTACK_BUILD_ARGS is a list of words on purpose
podman build --format docker --build-arg "BASE_IMAGE=$BASE" "${ca_args[@]}" \
    -t "$TAG" -f "$REPO/deploy/Dockerfile" ${MAILSTACK_BUILD_ARGS:-} "$REPO"

size=$(podman image inspect --format '{{.Size}}' "$TAG")
log "built $TAG in $(($(now) - started)) s"
printf 'image %s size %s bytes (%s MB)\n' "$TAG" "$size" "$((size / 1000000))"
