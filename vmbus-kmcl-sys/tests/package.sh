#!/usr/bin/env bash
# Proves that vmbus-kmcl-sys is publishable: `cargo package` makes the .crate, which is then
# unpacked alone into a temporary directory outside the workspace and tested there, with default
# features (the checked-in bindings) and with `bindgen` (regeneration from the packaged
# wrapper.h and headers, the cc-compiled inline helpers, the freshness check), and finally in
# WDK mode against the packaged stand-in header.
#
#   bash vmbus-kmcl-sys/tests/package.sh
#
# Builds go to $CARGO_TARGET_DIR (default: <workspace>/target), the unpacked crate's under
# package-check/ inside it, so reruns are incremental. Exits non-zero on the first failure.
set -euo pipefail

crate=vmbus-kmcl-sys
workspace=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$workspace"

target=${CARGO_TARGET_DIR:-$workspace/target}
case $target in
/*) ;;
*) target=$workspace/$target ;;
esac
export CARGO_TARGET_DIR=$target
# WDK mode is chosen explicitly below, never inherited from the caller.
unset VMBUS_KMCL_WDK_INCLUDE_DIR

# The tests of the packaged crate are run below, in both configurations; cargo's own
# verification build (default features only) would add nothing.
cargo package -p "$crate" --allow-dirty --no-verify
version=$(cargo pkgid -p "$crate" | sed 's/.*[#@]//')
archive=$target/package/$crate-$version.crate
[[ -f $archive ]] || { echo "package.sh: $archive was not produced" >&2; exit 1; }

scratch=$(mktemp -d "${TMPDIR:-/tmp}/$crate-package.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
tar -xzf "$archive" -C "$scratch"
unpacked=$scratch/$crate-$version

# What the build needs must travel as real files (wrapper.h is a symlink in the repository).
for file in wrapper.h include/VmbusKernelModeClientLibApi.h include/kmcl_base_types.h \
    build/generate.rs build/wdk_guids.c build/wdk_layout.c src/bindings.rs \
    tests/wdk-standin/VmbusKernelModeClientLibApi.h README.md LICENSE; do
    if [[ ! -f $unpacked/$file || -L $unpacked/$file ]]; then
        echo "package.sh: $file is missing from the package, or not a regular file" >&2
        exit 1
    fi
done

# The unpacked crate is a package of its own (no workspace above /tmp); build it with its own
# target directory so that nothing is shared with the workspace build by accident.
export CARGO_TARGET_DIR=$target/package-check
cd "$unpacked"
echo "package.sh: testing the unpacked $crate $version with default features"
cargo test --locked
echo "package.sh: testing the unpacked $crate $version with --features bindgen"
cargo test --locked --features bindgen
echo "package.sh: testing the unpacked $crate $version in WDK mode (the packaged stand-in header)"
VMBUS_KMCL_WDK_INCLUDE_DIR=$unpacked/tests/wdk-standin \
    cargo test --locked --features bindgen --test wdk_mode
echo "package.sh: $crate $version builds and passes its tests from the .crate alone"
