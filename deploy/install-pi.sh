#!/usr/bin/env bash
# Install (or update) cardedge on Raspberry Pi OS (Bookworm, 64-bit) on a Raspberry Pi 5.
#
#   sudo deploy/install-pi.sh [--bundle PATH] [--trust-key FILE.pub] [--no-hailo] [--no-start]
#                             [--prefix DIR] [--dry-run]
#
# Idempotent: run it again after `git pull` to update the code; existing configuration, token,
# state and bundles are kept. What it does:
#   1. apt: python3-venv, python3-picamera2, a C compiler and Python headers (the detector's
#      decode is compiled at install) and (unless --no-hailo) hailo-all (HailoRT 4.x, driver)
#   2. a system user `cardedge` in the video and render groups
#   3. a venv at PREFIX/.venv with --system-site-packages (so picamera2 and hailo_platform from
#      apt are visible) and this package installed into it
#   4. /etc/cardedge/cardedge.env (from systemd/cardedge.env.example) and a random API token in
#      /etc/cardedge/token (root-only; systemd hands it to the service as a credential)
#   5. the state directory /var/lib/cardedge and a first bundle (--bundle, else models/demo)
#   6. the systemd unit, enabled and (re)started
set -euo pipefail

PREFIX=/opt/cardedge
STATE_DIR=/var/lib/cardedge
ETC_DIR=/etc/cardedge
SERVICE_USER=cardedge
BUNDLE=""
TRUST_KEY=""
WITH_HAILO=1
START=1
DRY_RUN=0
SRC_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

usage() {
    sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'
}

log() {
    printf '[install-pi] %s\n' "$*"
}

die() {
    printf '[install-pi] error: %s\n' "$*" >&2
    exit 1
}

# Run a command, or only print it with --dry-run.
run() {
    if [ "$DRY_RUN" -eq 1 ]; then
        printf '+ %s\n' "$*"
    else
        "$@"
    fi
}

parse_args() {
    while [ $# -gt 0 ]; do
        case "$1" in
            --bundle) BUNDLE="${2:?--bundle needs a path}"; shift 2 ;;
            --trust-key) TRUST_KEY="${2:?--trust-key needs a file}"; shift 2 ;;
            --prefix) PREFIX="${2:?--prefix needs a directory}"; shift 2 ;;
            --no-hailo) WITH_HAILO=0; shift ;;
            --no-start) START=0; shift ;;
            --dry-run) DRY_RUN=1; shift ;;
            -h|--help) usage; exit 0 ;;
            *) die "unknown option $1 (see --help)" ;;
        esac
    done
}

check_host() {
    if [ "$DRY_RUN" -eq 0 ] && [ "$(id -u)" -ne 0 ]; then
        die "run as root: sudo $0 $*"
    fi
    if ! grep -qi 'raspberry pi' /proc/device-tree/model 2>/dev/null; then
        log "warning: this does not look like a Raspberry Pi; continuing (the ONNX backend works anywhere)"
    fi
    [ -f "$SRC_DIR/pyproject.toml" ] || die "run this script from a cardedge checkout ($SRC_DIR)"
}

install_apt_packages() {
    local packages=(python3-venv python3-pip python3-dev gcc python3-picamera2 curl)
    if [ "$WITH_HAILO" -eq 1 ]; then
        packages+=(hailo-all)
    fi
    log "apt: ${packages[*]}"
    run apt-get update -qq
    run env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}"
    if [ "$WITH_HAILO" -eq 1 ] && [ ! -e /dev/hailo0 ]; then
        log "note: /dev/hailo0 is not there yet; a reboot after the first hailo-all install loads the driver"
    fi
}

create_user() {
    if id -u "$SERVICE_USER" >/dev/null 2>&1; then
        log "user $SERVICE_USER exists"
    else
        log "creating system user $SERVICE_USER"
        run useradd --system --user-group --home-dir "$STATE_DIR" --shell /usr/sbin/nologin "$SERVICE_USER"
    fi
    local group
    for group in video render; do
        if getent group "$group" >/dev/null; then
            run usermod -aG "$group" "$SERVICE_USER"
        fi
    done
}

install_package() {
    log "installing cardedge into $PREFIX/.venv"
    run mkdir -p "$PREFIX"
    if [ ! -x "$PREFIX/.venv/bin/python" ]; then
        run python3 -m venv --system-site-packages "$PREFIX/.venv"
    fi
    run "$PREFIX/.venv/bin/python" -m pip install -q --upgrade pip
    # A plain (non-editable) install: the service never runs code from the checkout.
    run "$PREFIX/.venv/bin/python" -m pip install -q --upgrade "$SRC_DIR"
    run install -m 0644 "$SRC_DIR/README.md" "$PREFIX/README.md"
}

write_config() {
    run install -d -m 0755 "$ETC_DIR"
    if [ ! -f "$ETC_DIR/cardedge.env" ]; then
        log "writing $ETC_DIR/cardedge.env"
        run install -m 0644 "$SRC_DIR/systemd/cardedge.env.example" "$ETC_DIR/cardedge.env"
    else
        log "keeping existing $ETC_DIR/cardedge.env"
    fi
    if [ ! -s "$ETC_DIR/token" ]; then
        log "generating the API token in $ETC_DIR/token"
        if [ "$DRY_RUN" -eq 0 ]; then
            (umask 077 && head -c 32 /dev/urandom | base64 | tr -d '/+=\n' >"$ETC_DIR/token")
        fi
    fi
    if [ -n "$TRUST_KEY" ]; then
        [ -f "$TRUST_KEY" ] || die "no such key file: $TRUST_KEY"
        run install -d -m 0755 "$ETC_DIR/keys"
        run install -m 0644 "$TRUST_KEY" "$ETC_DIR/keys/$(basename "$TRUST_KEY")"
        set_env CARDEDGE_BUNDLES__PUBLIC_KEYS "[\"$ETC_DIR/keys/$(basename "$TRUST_KEY")\"]"
        log "bundles must now be signed by $(basename "$TRUST_KEY")"
    fi
}

# Set KEY=VALUE in cardedge.env, replacing an existing line.
set_env() {
    local key="$1" value="$2" file="$ETC_DIR/cardedge.env"
    if [ "$DRY_RUN" -eq 1 ]; then
        printf '+ set %s=%s in %s\n' "$key" "$value" "$file"
        return
    fi
    if grep -q "^$key=" "$file"; then
        sed -i "s|^$key=.*|$key=$value|" "$file"
    else
        printf '%s=%s\n' "$key" "$value" >>"$file"
    fi
}

install_first_bundle() {
    run install -d -m 0750 -o "$SERVICE_USER" -g "$SERVICE_USER" "$STATE_DIR"
    local bundle="$BUNDLE"
    if [ -z "$bundle" ]; then
        if [ -L "$STATE_DIR/current" ]; then
            log "a current bundle is installed; keeping it"
            return
        fi
        bundle="$SRC_DIR/models/demo"
        [ -f "$bundle/manifest.json" ] || die "no bundle: pass --bundle PATH (a bundle dir or .tar/.tar.gz/.tar.zst)"
    fi
    log "installing bundle $bundle"
    # As root (the bundle may sit in a home directory the service user cannot read), then hand
    # the state directory to the service user.
    run "$PREFIX/.venv/bin/cardedge" bundle install "$bundle" --state-dir "$STATE_DIR"
    run chown -R "$SERVICE_USER:$SERVICE_USER" "$STATE_DIR"
}

install_service() {
    log "installing the systemd unit"
    run install -m 0644 "$SRC_DIR/systemd/cardedge.service" /etc/systemd/system/cardedge.service
    run systemctl daemon-reload
    run systemctl enable cardedge.service
    if [ "$START" -eq 1 ]; then
        run systemctl restart cardedge.service
    fi
}

wait_ready() {
    if [ "$START" -eq 0 ] || [ "$DRY_RUN" -eq 1 ]; then
        return 0
    fi
    local port
    port="$(sed -n 's/^CARDEDGE_SERVER__PORT=//p' "$ETC_DIR/cardedge.env" | tail -n 1)"
    port="${port:-8080}"
    log "waiting for http://127.0.0.1:$port/readyz"
    local _
    for _ in $(seq 1 90); do
        if curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; then
            log "ready: http://$(hostname).local:$port/ (token: sudo cat $ETC_DIR/token)"
            return 0
        fi
        sleep 2
    done
    log "not ready after 3 minutes; see: journalctl -u cardedge -n 50 ; cardedge doctor"
    return 1
}

main() {
    parse_args "$@"
    check_host "$@"
    install_apt_packages
    create_user
    install_package
    write_config
    install_first_bundle
    install_service
    wait_ready
}

main "$@"
