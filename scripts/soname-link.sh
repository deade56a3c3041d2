#!/usr/bin/env bash
# soname-link.sh DIR...: puts the SONAME link (libgrpc_failover.so.0 -> libgrpc_failover.so) next
# to each DIR/libgrpc_failover.so that cargo built. A program linked against the .so records its
# SONAME and looks for that name at run time; cargo writes only the unversioned file. The name
# comes from the library itself (readelf), so it follows the crate's major version.
set -euo pipefail
for dir in "$@"; do
    lib="$dir/libgrpc_failover.so"
    [ -f "$lib" ] || { echo "soname-link: $lib not found" >&2; exit 1; }
    soname=$(readelf -d "$lib" | sed -n 's/.*(SONAME).*\[\(.*\)\].*/\1/p')
    [ -n "$soname" ] || { echo "soname-link: $lib has no SONAME" >&2; exit 1; }
    ln -sfn libgrpc_failover.so "$dir/$soname"
done
