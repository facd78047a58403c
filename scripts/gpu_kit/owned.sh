# Sourced by build.sh and run.sh: the kit never removes what it did not create. A folder it replaces
# must be absent, empty, or marked as its own (a marker file it wrote when it made the folder).
#
#   ours_or_absent DIR MARKER WHAT   # exit 2, nothing removed, when DIR is someone else's
#   replace_ours DIR MARKER          # remove DIR (checked above), ready to be made again

ours_or_absent() {
  local dir=$1 marker=$2 what=$3
  if [ -L "$dir" ] || { [ -e "$dir" ] && [ ! -d "$dir" ]; }; then
    echo "$what $dir exists and is not a folder the kit made: choose another path; nothing removed" >&2; exit 2
  fi
  if [ -d "$dir" ] && [ ! -f "$dir/$marker" ] && [ -n "$(ls -A "$dir")" ]; then
    echo "$what $dir exists and was not made by the kit (no $marker in it): choose a new folder, or remove it yourself; nothing removed" >&2
    exit 2
  fi
}

replace_ours() {
  local dir=$1 marker=$2
  if [ -d "$dir" ] && [ ! -L "$dir" ] && { [ -f "$dir/$marker" ] || [ -z "$(ls -A "$dir")" ]; }; then
    rm -rf "$dir"
  fi
}
