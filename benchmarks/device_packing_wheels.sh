#!/usr/bin/env bash
# Build .whlpack/ (git-ignored) for benchmarks/device_packing.sh: the Python packages that
# `benchmarks/orchestration.py packing` imports (Ray Train/Tune, MLflow on sqlite, Optuna, Hydra, pydantic)
# and their dependencies, minus what the GPU machine's image already has, for its Python 3.12.
#
#   here, first:  bash benchmarks/device_packing_wheels.sh     (network to PyPI; xz -9 takes minutes)
#   device run:   bash benchmarks/device_packing.sh             (timeout_s 600, carry [".whlpack"])
#
# Why a tar.xz and not .whl/: a device call carries at most 64 MiB of working tree, and these 72 wheels
# are 122 MiB (ray's alone 79 MB, deflate). They are installed here into one site folder (pip install
# --target for cp312, 292 MiB), which xz -9 packs into about 51 MiB: it squeezes Ray's shared
# libraries far better than a wheel's zip does. Left out: ray/jars (a 33 MiB, already-zipped jar for
# Ray's Java workers, which Ray starts only when it finds both the jars and a java binary; this
# project is Python only). The device only untars the pack into /tmp/site.
#
# NAMES is the dependency closure of ray[default,tune,train], mlflow, optuna, cmaes, hydra-core,
# omegaconf, pydantic as .venv resolved it (markers read for Python 3.12 on Linux), less the packages
# listed for the image in the device notes' KINDS.md (torch, lightning, pandas, pyarrow, aiohttp, grpcio,
# protobuf, numpy, scipy, requests, click, rich, typer, ...). Each is pinned to the version .venv runs,
# so the device runs what CI tests. The pure-Python sdists (antlr4-python3-runtime 4.9.3) are built
# into wheels here. Two image packages come along anyway, as FLOORS: the image's versions are unknown
# and the pack needs recent ones (pydantic 2.14 wants typing-extensions >= 4.16; the google.rpc protos
# that Ray's dashboard agent imports through opencensus refuse a protobuf runtime older than 6.33.5,
# and the raylet exits when that agent dies). device_packing.sh puts /tmp/site first, so .venv's
# versions of these two win there too (both keep backward compatibility; torch needs neither).
set -euo pipefail
cd "$(dirname "$0")/.."
py="${PYTHON:-.venv/bin/python}"
pack_dir=.whlpack
limit_mib="${PACK_LIMIT_MIB:-60}"  # 64 MiB per call, less the ~2 MB checkout and some margin
NAMES="aiohttp-cors alembic annotated-types antlr4-python3-runtime blinker cachetools cffi cmaes colorful
colorlog cryptography databricks-sdk distlib docker fastapi flask flask-cors gitdb gitpython google-api-core
google-auth googleapis-common-protos graphene graphql-core graphql-relay gunicorn huey hydra-core
importlib-metadata itsdangerous jsonschema jsonschema-specifications mako mlflow mlflow-skinny mlflow-tracing
omegaconf opencensus opencensus-context opentelemetry-api opentelemetry-exporter-prometheus opentelemetry-proto
opentelemetry-sdk opentelemetry-semantic-conventions optuna platformdirs prettytable proto-plus py-spy pyasn1
pyasn1-modules pycparser pydantic pydantic-core python-discovery python-dotenv ray referencing rpds-py skops
smart-open smmap sqlalchemy sqlparse starlette tensorboardx typing-inspection uvicorn virtualenv wcwidth"
FLOORS="protobuf typing-extensions"
# Published only as sdists (pure Python): built with .venv's pip, checked to come out py3-none-any.
SDISTS="antlr4-python3-runtime"
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64
           --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
TARGET=(--python-version 3.12 --implementation cp "${PLATFORMS[@]}")

pip_q() {  # pip, without the warnings about this machine's local index folders
  "$py" -m pip "$@" 2>&1 | { grep -v "is neither a file nor a directory" || true; }
}
# name==version as .venv has it, e.g. ray==2.60.0; names normalised as pip does ("PyYAML" -> "pyyaml")
freeze=$("$py" -m pip list --format=freeze 2>/dev/null \
         | awk -F'==' '{n = tolower($1); gsub(/[_.]+/, "-", n); print n "==" $2}')
pin() {
  local v
  v=$(printf '%s\n' "$freeze" | grep -m1 "^$1==" | cut -d= -f3) || true
  [ -n "$v" ] || { echo "device_packing_wheels: $1 is not installed in $py's environment; run make setup" >&2
                   exit 1; }
  echo "$1==$v"
}
binary=() sdist=()
for n in $NAMES $FLOORS; do
  if [[ " $SDISTS " == *" $n "* ]]; then sdist+=("$(pin "$n")"); else binary+=("$(pin "$n")"); fi
done

work=$(mktemp -d "${TMPDIR:-/tmp}/whlpack.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/wheels" "$work/site"
echo "downloading ${#binary[@]} wheels for cp312 manylinux x86_64 ..."
pip_q download -q --no-deps --only-binary=:all: "${TARGET[@]}" -d "$work/wheels" "${binary[@]}"
if [ "${#sdist[@]}" -gt 0 ]; then
  echo "building ${sdist[*]} ..."
  pip_q wheel -q --no-deps -w "$work/wheels" "${sdist[@]}"
  for n in $SDISTS; do
    f=$(ls "$work/wheels/$(echo "$n" | tr - _)"-*.whl)
    [[ "$f" == *-py3-none-any.whl || "$f" == *-py2.py3-none-any.whl ]] \
      || { echo "device_packing_wheels: $f is not a pure-Python wheel; it cannot run on the device" >&2; exit 1; }
  done
fi
n_whl=$(find "$work/wheels" -name "*.whl" | wc -l)
n_want=$(( ${#binary[@]} + ${#sdist[@]} ))
[ "$n_whl" -eq "$n_want" ] || { echo "device_packing_wheels: $n_whl wheels for $n_want names" >&2; exit 1; }
du -cb "$work/wheels"/*.whl | tail -1 | awk '{printf "wheels: %.1f MiB in %d files\n", $1/1048576, '"$n_whl"'}'

# One site folder, as `pip install --target /tmp/site` would make it on the device (no .pyc: Python 3.12
# there writes its own; no bin/: nothing runs the console scripts, and their shebangs would name .venv).
pip_q install -q --no-deps --no-index --no-compile --only-binary=:all: "${TARGET[@]}" \
  --target "$work/site" "$work/wheels"/*.whl
rm -rf "$work/site/bin" "$work/site/ray/jars"
# A google/__init__.py here would hide the image's protobuf (google.protobuf): the namespace must stay implicit.
[ ! -e "$work/site/google/__init__.py" ] || { echo "device_packing_wheels: site/google/__init__.py found" >&2; exit 1; }
du -sb "$work/site" | awk '{printf "site folder: %.1f MiB\n", $1/1048576}'

mkdir -p "$pack_dir"
grep -qxF "/$pack_dir/" .git/info/exclude 2>/dev/null || echo "/$pack_dir/" >> .git/info/exclude
rm -f "$pack_dir"/site*.tar.xz "$pack_dir"/NAMES.txt
printf '%s\n' "${binary[@]}" "${sdist[@]}" > "$pack_dir/NAMES.txt"
echo "packing with xz -9 (minutes) ..."
tar -C "$work/site" --sort=name --owner=0 --group=0 --numeric-owner -cf - . \
  | xz -9 -T"${XZ_THREADS:-2}" > "$pack_dir/site.tar.xz.part"
mv "$pack_dir/site.tar.xz.part" "$pack_dir/site.tar.xz"
size=$(stat -c %s "$pack_dir/site.tar.xz")
awk -v s="$size" 'BEGIN {printf "pack: .whlpack/site.tar.xz %.1f MiB\n", s/1048576}'
if [ "$size" -gt $(( limit_mib * 1048576 )) ]; then
  # Over one call's share: two packs, ray alone and the rest, carried by two device calls back to back
  # (`device_packing.sh --unpack-only` with the first; the machine keeps /tmp/site while it stays warm).
  echo "pack is over ${limit_mib} MiB: splitting into site-ray.tar.xz and site-rest.tar.xz"
  rm "$pack_dir/site.tar.xz"
  (cd "$work/site" && ls -d ./ray ./ray-*.dist-info) > "$work/ray.list"
  tar -C "$work/site" --sort=name --owner=0 --group=0 --numeric-owner -cf - -T "$work/ray.list" \
    | xz -9 -T"${XZ_THREADS:-2}" > "$pack_dir/site-ray.tar.xz"
  tar -C "$work/site" --sort=name --owner=0 --group=0 --numeric-owner --anchored -X "$work/ray.list" -cf - . \
    | xz -9 -T"${XZ_THREADS:-2}" > "$pack_dir/site-rest.tar.xz"
  for f in "$pack_dir"/site-*.tar.xz; do
    awk -v s="$(stat -c %s "$f")" -v f="$f" 'BEGIN {printf "pack: %s %.1f MiB\n", f, s/1048576}'
  done
  echo "SPLIT: two device calls needed: carry .whlpack/site-ray.tar.xz, then .whlpack/site-rest.tar.xz"
fi
