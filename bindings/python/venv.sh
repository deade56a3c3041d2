# Sourced by the scripts that need a Python venv with this binding installed
# (bindings/python/run_tests.sh, bench/python/run.sh, bench/run.sh).
#
#   gf_python_venv VENV PACKAGE...
#
# Makes VENV on first use (installing Debian's python3-venv when the interpreter lacks venv and
# we are root), then installs PACKAGE... from PyPI and the binding from this checkout, normally
# (not editable), as users get it: the package must find its bundled library.

gf_python_venv() {
    local venv=$1
    shift
    local python=${PYTHON:-python3}
    local binding
    binding=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
    if [ ! -x "$venv/bin/python" ]; then
        if ! "$python" -m venv "$venv"; then
            # Debian's own python3 ships venv in a separate package.
            if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
                rm -rf "$venv"
                DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
                DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
                "$python" -m venv "$venv"
            else
                echo "cannot create a venv with $python; install python3-venv" >&2
                return 1
            fi
        fi
    fi
    local pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
    "${pip[@]}" install "$@" setuptools wheel
    "${pip[@]}" install --no-build-isolation --no-deps --force-reinstall "$binding"
}
