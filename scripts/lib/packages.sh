# Shared by scripts/demo and scripts/test: install missing Debian packages when root.

# ensure_packages PKG...: installs the packages that are not installed yet (one apt-get update).
ensure_packages() {
    command -v dpkg-query >/dev/null 2>&1 || return 0
    local missing=() pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
    done
    [ "${#missing[@]}" -gt 0 ] || return 0
    if [ "$(id -u)" -ne 0 ]; then
        printf 'missing packages (not root, not installing): %s\n' "${missing[*]}" >&2
        return 0
    fi
    printf 'installing %s\n' "${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
}
