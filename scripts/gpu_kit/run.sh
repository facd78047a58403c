#!/usr/bin/env bash
# ftk's GPU check in one call: install the wheelhouse (scripts/gpu_kit/build.sh) with --no-index on
# top of the machine's own Python (torch there), then run kit.py: env, a 1B-shaped model, S2 head LoRA,
# S0 full SFT (FlashAttention-2 or sdpa) and ZeRO-3, eval speed, packing; one summary table at the
# end, JSON under $OUT (or --out).
#
#   bash scripts/gpu_kit/run.sh                         # on any GPU node (default budget 480 s)
#   scripts/gpu_kit/run.sh --cpu-rehearsal              # here: a fresh Python 3.12 venv standing in for
#                                                       # the device image (device-image.txt), tiny sizes
# Options: --reuse-venv (rehearsal: keep an existing stand-in venv), --wheels DIR (default .whl), --out DIR (default $OUT or kit-out), --python PY (default
# python3), --budget SECONDS, --steps env,model,s2_head,s0,eval,packing.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
rehearsal=0
reuse=0
wheels=$repo/.whl
out=${OUT:-$repo/kit-out}
py=python3
kit_args=()
while [ $# -gt 0 ]; do
  case $1 in
    --cpu-rehearsal) rehearsal=1; shift ;;
    --reuse-venv) reuse=1; shift ;;
    --wheels) wheels=${2:?--wheels needs a folder}; shift 2 ;;
    --out) out=${2:?--out needs a folder}; shift 2 ;;
    --python) py=${2:?--python needs an interpreter}; shift 2 ;;
    --budget|--steps) kit_args+=("$1" "${2:?$1 needs a value}"); shift 2 ;;
    *) echo "run.sh: unknown argument '$1' (expected --cpu-rehearsal, --reuse-venv, --wheels DIR, --out DIR, --python PY, --budget S, --steps LIST)" >&2; exit 2 ;;
  esac
done
if ! ls "$wheels"/*.whl >/dev/null 2>&1; then
  echo "run.sh: no wheels in $wheels: run scripts/gpu_kit/build.sh first" >&2; exit 2
fi
. "$here/owned.sh"  # the stand-in venv and the install folder are replaced only when the kit made them
mkdir -p "$out"
t0=$(date +%s)

if [ "$rehearsal" = 1 ]; then
  py312=""
  for c in python3.12 "$HOME"/.pyenv/versions/3.12*/bin/python3.12; do
    if "$c" -c 'import sys; assert sys.version_info[:2] == (3, 12)' >/dev/null 2>&1; then py312=$c; break; fi
  done
  [ -n "$py312" ] || { echo "run.sh: the rehearsal needs a Python 3.12 (the device's); none found" >&2; exit 2; }
  base=${FTK_KIT_BASE:-/tmp/ftk-kit-rehearsal/venv}
  if [ "$reuse" = 1 ] && [ -x "$base/bin/python" ]; then
    echo "[kit] rehearsal: reusing the venv $base (--reuse-venv; the kit installs into its own folder, never into it)"
  else
    echo "[kit] rehearsal: fresh venv $base ($py312), the device image's packages from the registry"
    ours_or_absent "$base" .ftk-kit-venv "run.sh: FTK_KIT_BASE"
    replace_ours "$base" .ftk-kit-venv
    "$py312" -m venv "$base" || exit 1
    touch "$base/.ftk-kit-venv"
    "$base/bin/python" -m pip install -q --disable-pip-version-check -r "$here/device-image.txt" 2>&1 \
      | grep -v "is ignored: it is neither a file nor a directory" || true
    "$base/bin/python" -c 'import torch, transformers' || { echo "run.sh: the stand-in device image did not install" >&2; exit 1; }
  fi
  py=$base/bin/python
  kit_args+=(--cpu-rehearsal)
fi

{
  echo "python: $("$py" -c 'import sys; print(sys.executable, sys.version.split()[0])')"
  for m in torch transformers llamafactory deepspeed datasets peft trl ftk; do
    echo "$m before install: $("$py" -c "import importlib.metadata as m; print(m.version('$m'))" 2>/dev/null || echo absent)"
  done
} | tee "$out/before.txt"

site=${FTK_KIT_SITE:-/tmp/ftk-kit-site}
ours_or_absent "$site" .ftk-kit-site "run.sh: FTK_KIT_SITE"
replace_ours "$site" .ftk-kit-site
mkdir -p "$site" && touch "$site/.ftk-kit-site"
echo "[kit] installing $(ls "$wheels"/*.whl | wc -l) wheels from $wheels with --no-index into $site"
"$py" -m pip install -q --disable-pip-version-check --no-index --no-deps --no-compile --no-cache-dir \
  --target "$site" "$wheels"/*.whl || { echo "run.sh: the wheelhouse did not install" >&2; exit 1; }
export PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH}
export PATH=$site/bin:$PATH
"$py" -c 'import importlib.metadata as m; print("[kit] now: " + ", ".join(f"{p} {m.version(p)}" for p in ("ftk", "llamafactory", "transformers", "deepspeed", "datasets", "peft", "trl")))' \
  || { echo "run.sh: the installed packages do not import" >&2; exit 1; }
echo "[kit] install took $(( $(date +%s) - t0 )) s"
cd "$repo"
"$py" "$here/kit.py" --out "$out" "${kit_args[@]}" 2>&1 | tee "$out/kit.log"
exit "${PIPESTATUS[0]}"
