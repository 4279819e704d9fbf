#!/usr/bin/env bash
# A local stand-in for docker.io/library/python:3.11-slim, for machines that
# cannot pull from container registries: Debian bookworm (Python 3.11) made
# with debootstrap, a virtualenv first on PATH so `python` and `pip` exist as
# in the official image. Does nothing when the image is already there.
#
#   tests/container/base_image.sh [CACHE_DIR]     (root; buildah, debootstrap)
#
# Images live in CACHE_DIR/storage (vfs driver), apart from the machine's own
# container storage: no clash with its driver, and `make clean` removes them.
set -euo pipefail

IMAGE=docker.io/library/python:3.11-slim
CACHE=$(realpath -m "${1:-.cache/container}")
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
buildah() {
    command buildah --storage-driver vfs --root "$CACHE/storage" \
        --runroot "$CACHE/runroot" "$@"
}

# One at a time (two test workers, say): the second finds the image made.
mkdir -p "$CACHE"
exec 9>"$CACHE/base-image.lock"
flock 9

if buildah inspect --type image "$IMAGE" >/dev/null 2>&1; then
    echo "$IMAGE is already there"
    exit 0
fi

# The rootfs is kept (git-ignored cache): re-committing it takes seconds,
# debootstrap takes a minute or two.
rootfs=$CACHE/bookworm-python3.11
if [ ! -x "$rootfs/opt/python/bin/python" ]; then
    rm -rf "$rootfs.partial"
    mkdir -p "$CACHE"
    debootstrap --variant=minbase \
        --include=python3,python3-pip,python3-venv \
        bookworm "$rootfs.partial" "$MIRROR"
    chroot "$rootfs.partial" python3 -m venv /opt/python
    rm -rf "$rootfs.partial"/var/cache/apt/archives/*.deb \
        "$rootfs.partial"/var/lib/apt/lists/*
    rm -rf "$rootfs"
    mv "$rootfs.partial" "$rootfs"
fi

container=$(buildah from scratch)
trap 'buildah rm "$container" >/dev/null' EXIT
cp -a "$rootfs/." "$(buildah mount "$container")/"
buildah unmount "$container" >/dev/null
buildah config \
    --env PATH=/opt/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 \
    --cmd python \
    "$container"
buildah commit --quiet "$container" "$IMAGE"
echo "made $IMAGE"
