#!/usr/bin/env bash
# System packages brainllm uses, from Debian, for `make test` and `make demo` (the Makefile's install step runs this):
#   chromium                          headless browser: the HTML report is rendered and checked in it (one test);
#   wordnet-base wordnet-sense-index  WordNet for METEOR's synonym stage, then copied where nltk reads it;
#   python3-venv                      only when $PYTHON cannot make a virtual environment (no ensurepip).
# Idempotent: packages already installed (dpkg -s) are not touched, a prepared WordNet copy is kept, so a second run
# takes well under a second. Never fails the build: without apt-get, or without root or password-less sudo, or when
# the install itself fails, it prints one line saying so and what to run, and exits 0 (the browser test then skips
# with the reason, and METEOR runs without synonyms and says so in its variant name).
set -uo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
PACKAGES=(chromium wordnet-base wordnet-sense-index)
say() { echo "setup-system: $*"; }
# Debian's own python3 makes virtual environments only with python3-venv (ensurepip), which the next step needs.
if ! "$PYTHON" -c 'import ensurepip' >/dev/null 2>&1; then
    PACKAGES+=(python3-venv)
fi

if ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg >/dev/null 2>&1; then
    say "apt-get not found: ${PACKAGES[*]} not installed (the Chromium test skips, METEOR runs without synonyms)."
    exit 0
fi

installed() { dpkg -s "$1" 2>/dev/null | grep -q '^Status: install ok installed'; }
missing=()
for pkg in "${PACKAGES[@]}"; do
    installed "$pkg" || missing+=("$pkg")
done

if [ "${#missing[@]}" -gt 0 ]; then
    as_root=()
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
            as_root=(sudo -n)
        else
            as_root=(none)
        fi
    fi
    if [ "${as_root[*]}" = none ]; then
        say "not root and no password-less sudo: ${missing[*]} not installed; run" \
            "'sudo apt-get install --no-install-recommends ${missing[*]}' (until then the Chromium test skips and" \
            "METEOR runs without synonyms)."
    else
        say "installing ${missing[*]} with apt-get"
        if ! { "${as_root[@]}" apt-get update -qq &&
               "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
                   "${missing[@]}" >/dev/null; }; then
            say "apt-get could not install ${missing[*]} (see above); continuing without them."
        fi
    fi
fi

# nltk reads WordNet from <nltk data>/corpora/wordnet (copied, plus the `lexnames` table Debian omits); this step
# needs only the standard library, so it runs before .venv exists. Target: $NLTK_DATA, else /usr/share/nltk_data as
# root, else ~/nltk_data (all on nltk's search path).
if installed wordnet-base && installed wordnet-sense-index; then
    PYTHONPATH=src "$PYTHON" -m brainllm.evaluation.wordnet ||
        say "WordNet could not be prepared for nltk; METEOR runs without synonyms."
fi
exit 0
