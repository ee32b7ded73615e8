#!/usr/bin/env bash
# Create (once) the Python virtual environment used to run the Dask side of
# the comparison benchmarks, with pinned package versions.
#
#   PY=$(bash benches/compare/setup_venv.sh | tail -1)
#
# The venv lives at $RASK_COMPARE_VENV, default <repo>/target/compare-venv.
# All progress output goes to stderr; the last (and only) line on stdout is
# the path of the venv's python interpreter.
set -euo pipefail

# Versions are pinned so that Dask figures stay comparable between runs.
DASK_VERSION="2026.8.0"
JOBQUEUE_VERSION="0.9.0"
PACKAGES=("dask[distributed]==${DASK_VERSION}" "dask-jobqueue==${JOBQUEUE_VERSION}" numpy psutil)

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "${script_dir}/../.." && pwd)"
venv="${RASK_COMPARE_VENV:-${repo_root}/target/compare-venv}"
py="${venv}/bin/python"

# Nothing to do when the venv already has the pinned Dask importable.
if [[ -x "${py}" ]] && "${py}" - "${DASK_VERSION}" >/dev/null 2>&1 <<'EOF'
import sys
import dask
import distributed  # noqa: F401  (the import itself is the check)
import dask_jobqueue  # noqa: F401
sys.exit(dask.__version__ != sys.argv[1])
EOF
then
    echo "compare venv ready: ${venv} (dask ${DASK_VERSION})" >&2
    echo "${py}"
    exit 0
fi

if [[ ! -x "${py}" ]]; then
    echo "creating venv at ${venv}" >&2
    python3 -m venv "${venv}" >&2
fi

echo "installing ${PACKAGES[*]}" >&2
"${py}" -m pip install --quiet --upgrade pip >&2
"${py}" -m pip install --quiet "${PACKAGES[@]}" >&2

"${py}" -c 'import dask, distributed; print("installed dask", dask.__version__)' >&2
echo "${py}"
