#!/usr/bin/env bash
# Install Stockade on a containerd node: the shim and the `stockade` CLI, the profiles, and
# a containerd drop-in registering the CRI handlers `stockade`, `stockade-strict` and
# `stockade-record` (the default profile in seccomp record mode)
# (loaded through `imports` in containerd's config), then restart containerd.
# deploy/uninstall.sh removes exactly what this added and puts containerd's config back
# byte for byte. Running it again first undoes the previous install.
#
#   sudo deploy/install.sh                       # on the node, from a built checkout
#
# Environment (host paths unless said otherwise):
#   DESTDIR            where the host's / is as this script sees it (default empty; the
#                      DaemonSet mounts the host at /host)
#   PREFIX             /usr/local: binaries go to $PREFIX/bin
#   ETC                /etc/stockade: profiles, and the install record in $ETC/install-record
#   CONTAINERD_CONFIG  /etc/containerd/config.toml
#   DROPIN             $(dirname CONTAINERD_CONFIG)/conf.d/stockade.toml
#   CONTAINERD_CMD     how to run the node's containerd binary (default `containerd`; the
#                      DaemonSet: `chroot /host containerd`), for its version and config dump
#   RESTART_CMD        how to restart containerd (default `systemctl restart containerd`;
#                      empty: do not restart)
#   BIN_SRC            directory with containerd-shim-stockade-v1 and stockade
#                      (default: the checkout's target/release)
#   PROFILES_SRC       directory with default.toml, strict.toml, record.toml and the seccomp/*.json they
#                      name
#                      (default: the checkout's profiles/)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=deploy/lib.sh
. "$here/lib.sh"

BIN_SRC=${BIN_SRC:-$here/../target/release}
PROFILES_SRC=${PROFILES_SRC:-$here/../profiles}

if [ -d "$(host "$RECORD")" ]; then
  log "a previous install is recorded in $RECORD: undoing it first"
  RESTART_CMD="" "$here/uninstall.sh"
fi

# Whatever stops this script before the end undoes what it did so far.
completed=""
rollback() {
  if [ -z "$completed" ] && [ -f "$(host "$RECORD")/actions" ]; then
    log "install did not complete: undoing what it changed"
    RESTART_CMD="" "$here/uninstall.sh" || log "rollback failed: see $RECORD"
  fi
}
trap rollback EXIT

for f in "$BIN_SRC/containerd-shim-stockade-v1" "$BIN_SRC/stockade"; do
  [ -x "$f" ] || die "$f missing (build with 'cargo build --release --workspace' or set BIN_SRC)"
done
# The profiles and every seccomp file they may name (strict narrows default with strict.json).
PROFILES="default.toml strict.toml record.toml"
PROFILE_FILES="$PROFILES seccomp/default.json seccomp/strict.json"
for f in $PROFILE_FILES; do
  [ -f "$PROFILES_SRC/$f" ] || die "$PROFILES_SRC/$f missing (set PROFILES_SRC)"
done

major=$(containerd_major)
config_file=$(host "$CONTAINERD_CONFIG")
# The config's format: containerd 2.x merges an import into the main config before it
# migrates the result, so the drop-in must use the main config's version; 1.x reads only 2.
if [ -s "$config_file" ]; then
  version=$(config_version "$config_file")
  [ -n "$version" ] || die "$CONTAINERD_CONFIG has no top-level 'version = 2' or '3' line (version 1 configs are not supported: migrate it first)"
else
  version=$([ "$major" -ge 2 ] && echo 3 || echo 2)
fi
case "$major:$version" in
  1:2|2:2|2:3) ;;
  *) die "containerd $major.x with a version-$version config is not supported" ;;
esac
log "containerd $major.x, config $CONTAINERD_CONFIG version $version"
check_import "$config_file"

# What containerd makes of its config now, and the drop-in's text: before anything changes.
dump=$(run_containerd --config "$CONTAINERD_CONFIG" config dump 2>/dev/null) ||
  die "'$CONTAINERD_CMD --config $CONTAINERD_CONFIG config dump' failed"
# containerd 2.x imports /etc/containerd/conf.d/*.toml when the config names no imports.
EFFECTIVE_IMPORTS=$(grep -m1 '^imports *=' <<<"$dump" || true)
runtimes=$(runtime_tables "$here/$(snippet_for "$version")" | sed "s|/etc/stockade/|$ETC/|g")
if [ "$major" = 1 ]; then
  # containerd 1.x replaces a whole plugin section with an import's: the drop-in carries
  # the node's entire CRI section as containerd sees it now, plus the two runtimes.
  cri=$(cri_section_without_stockade <<<"$dump") ||
    die "could not read the CRI section from 'containerd config dump'"
  dropin_text=$(printf '%s\n' "# Written by Stockade's deploy/install.sh for containerd 1.x; uninstall.sh removes it." \
    "# containerd 1.x replaces a whole plugin section with an imported one, so this file holds" \
    "# the node's entire CRI section as it was at install time, plus Stockade's runtimes:" \
    "# change CRI settings here (or change config.toml and run install.sh again)." \
    "version = 2" "" "$cri" "" "$runtimes")
else
  dropin_text=$(printf '%s\n' "# Written by Stockade's deploy/install.sh; uninstall.sh removes it." \
    "version = $version" "" "$runtimes")
fi

mkdirs "$RECORD"
record "config $CONTAINERD_CONFIG"
if [ -e "$config_file" ]; then
  cp -p "$config_file" "$(host "$RECORD")/config.orig"
else
  : >"$(host "$RECORD")/config.absent"
fi

install_file 0755 "$BIN_SRC/containerd-shim-stockade-v1" "$PREFIX/bin/containerd-shim-stockade-v1"
install_file 0755 "$BIN_SRC/stockade" "$PREFIX/bin/stockade"
for f in $PROFILE_FILES; do
  install_file 0644 "$PROFILES_SRC/$f" "$ETC/$f"
done
for p in $PROFILES; do
  "$BIN_SRC/stockade" profile check "$(host "$ETC/$p")" >/dev/null ||
    die "installed profile $ETC/$p does not load"
done
write_file 0644 "$DROPIN" "$dropin_text"
add_import "$config_file" "$version" "$DROPIN"
config_digest "$config_file" >"$(host "$RECORD")/config.installed.sha256"

# containerd itself must see every runtime in the merged config, or a silently dropped
# section (a version mismatch, a replaced plugin table) would show up only at pod start.
dump=$(run_containerd --config "$CONTAINERD_CONFIG" config dump 2>/dev/null) || dump=""
for p in $PROFILES; do
  # 1.6 dumps with double quotes, 2.x with single.
  if ! grep -qF -e "ConfigPath = \"$ETC/$p\"" -e "ConfigPath = '$ETC/$p'" <<<"$dump"; then
    die "containerd's merged config lacks ConfigPath $ETC/$p: the drop-in $DROPIN was not taken up"
  fi
done

completed=1
restart_containerd
log "installed: handlers stockade ($ETC/default.toml), stockade-strict ($ETC/strict.toml) and stockade-record ($ETC/record.toml)"
