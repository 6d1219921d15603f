#!/usr/bin/env bash
# Create one virtualenv per peer PPO implementation under benchmarks/peers/.venvs/.
#
# Usage: bash benchmarks/peers/setup.sh [peer ...]     (default: sb3 rejax)
#
# Idempotent: a venv whose imports already work is left alone. A peer that
# fails to install makes the script exit non-zero after trying the others.
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENVS="$HERE/.venvs"
PYTHON="${PYTHON:-python3}"

# Exact pins: the versions the figures in README.md were measured with.
# torch==2.13.0 resolves to the CPU wheel (2.13.0+cpu) that pip finds on disk;
# never ask for an unpinned torch, which pulls the multi-GB CUDA build.
SB3_PKGS=(torch==2.13.0 stable-baselines3==2.9.2 gymnasium==1.4.0)
SB3_CHECK='import torch, stable_baselines3, gymnasium'

# rejax 0.1.3 with gymnax<1.0 (0.0.9); gymnax imports six without declaring it.
REJAX_PKGS=(rejax==0.1.3 gymnax==0.0.9 jax==0.10.2 jaxlib==0.10.2 flax==0.12.8
            optax==0.2.8 distrax==0.1.9 chex==0.1.92 six)
REJAX_CHECK='import jax, gymnax, rejax; gymnax.make("CartPole-v1")'

setup_peer() {
    local peer="$1" check="$2"
    shift 2
    local venv="$VENVS/$peer"
    if [[ -x "$venv/bin/python" ]] && "$venv/bin/python" -c "$check" >/dev/null 2>&1; then
        echo "[setup] $peer: ok ($venv)"
        return 0
    fi
    echo "[setup] $peer: creating $venv"
    rm -rf "$venv"
    "$PYTHON" -m venv "$venv" || return 1
    "$venv/bin/python" -m pip install --quiet --upgrade pip || return 1
    "$venv/bin/python" -m pip install --quiet "$@" || return 1
    "$venv/bin/python" -c "$check" || return 1
    echo "[setup] $peer: installed"
}

main() {
    local peers=("$@")
    [[ ${#peers[@]} -eq 0 ]] && peers=(sb3 rejax)
    mkdir -p "$VENVS"
    local failed=0
    for peer in "${peers[@]}"; do
        case "$peer" in
            sb3) setup_peer sb3 "$SB3_CHECK" "${SB3_PKGS[@]}" || { echo "[setup] sb3: FAILED" >&2; failed=1; } ;;
            rejax) setup_peer rejax "$REJAX_CHECK" "${REJAX_PKGS[@]}" || { echo "[setup] rejax: FAILED" >&2; failed=1; } ;;
            *) echo "[setup] unknown peer: $peer" >&2; failed=1 ;;
        esac
    done
    return "$failed"
}

main "$@"
