#!/usr/bin/env bash
# Write a minimal busybox root filesystem into the directory $1, for `docker import` and
# `podman import` (.ci/docker-setup.sh, .ci/podman-setup.sh): busybox-static plus one symlink
# per applet, and the passwd/group entries `user: nobody` and `id` expect. The static build
# matters: a dynamic /bin/busybox would miss its libc inside the image.
set -euo pipefail
root="$1"
mkdir -p "$root/bin" "$root/tmp" "$root/etc" "$root/root" "$root/proc" "$root/sys" "$root/dev"
chmod 1777 "$root/tmp"
cp /bin/busybox "$root/bin/busybox"
for applet in $(/bin/busybox --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' \
    >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
