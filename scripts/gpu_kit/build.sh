#!/usr/bin/env bash
# Build the GPU kit's wheelhouse: ftk's own wheel + exactly the wheels the GPU machine lacks
# (wheels.txt: downloaded for its CPython 3.12 on manylinux x86-64; sdists.txt: built here).
#
#   scripts/gpu_kit/build.sh                       # -> .whl/ (git-ignored), for the device
#   scripts/gpu_kit/build.sh --python-version 3.11 --dest /tmp/whl-3.11   # for a rehearsal here
#
# Fails (exit 1) when the wheelhouse is over 60 MiB: the device takes 64 MiB per call, repo included.
# An existing --dest is replaced only when build.sh made it (its .ftk-kit-wheelhouse marker) or it is empty.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
pyver=3.12
dest=$repo/.whl
limit_mib=${FTK_KIT_LIMIT_MIB:-60}  # MiB; the variable is for the test of the refusal
while [ $# -gt 0 ]; do
  case $1 in
    --python-version) pyver=${2:?--python-version needs X.Y}; shift 2 ;;
    --dest) dest=${2:?--dest needs a folder}; shift 2 ;;
    *) echo "build.sh: unknown argument '$1' (expected --python-version X.Y, --dest DIR)" >&2; exit 2 ;;
  esac
done
PY=${PYTHON:-$repo/.venv/bin/python}
[ -x "$PY" ] || { echo "build.sh: $PY not found: run \`make venv\` first (or set PYTHON)" >&2; exit 2; }

. "$here/owned.sh"
marker=.ftk-kit-wheelhouse
ours_or_absent "$dest" "$marker" "build.sh: --dest"
mkdir -p "$(dirname "$dest")"
stage=$(mktemp -d "$dest.staging-XXXXXX")  # made here, so removed here
trap 'rm -rf "$stage"' EXIT
chmod u=rwx,go=rx "$stage"

echo "[kit] ftk's own wheel"
"$PY" -m pip wheel -q --no-deps -w "$stage" "$repo"
echo "[kit] binary wheels for CPython $pyver (wheels.txt)"
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$pyver" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$stage" -r "$here/wheels.txt"
echo "[kit] source-only packages, built here (sdists.txt; DeepSpeed without ops)"
DS_BUILD_OPS=0 DS_BUILD_AIO=0 DS_BUILD_GDS=0 "$PY" -m pip wheel -q --no-deps --no-build-isolation \
  -w "$stage" -r "$here/sdists.txt"

count=$(ls "$stage"/*.whl | wc -l)
bytes=$(cat "$stage"/*.whl | wc -c)
mib=$(awk -v b="$bytes" 'BEGIN { printf "%.1f", b / 1048576 }')
ls -S "$stage" | head -5 | sed 's/^/[kit]   largest: /'
if awk -v b="$bytes" -v l="$limit_mib" 'BEGIN { exit !(b > l * 1048576) }'; then
  echo "[kit] wheelhouse is $mib MiB, over the $limit_mib MiB limit ($count wheels): nothing written to $dest" >&2
  exit 1
fi
touch "$stage/$marker"
replace_ours "$dest" "$marker"
mv "$stage" "$dest"
echo "[kit] wheelhouse $dest: $count wheels, $mib MiB (limit $limit_mib MiB) for CPython $pyver"
