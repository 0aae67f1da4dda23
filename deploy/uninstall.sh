#!/usr/bin/env bash
# Undo deploy/install.sh, from its install record ($ETC/install-record): containerd's
# config back to what it was byte for byte (or, if it was edited since the install, only
# the `imports` entry taken out again), the drop-in, binaries and profiles removed (files
# they replaced restored), the directories the install created removed, containerd
# restarted. Same environment as install.sh.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=deploy/lib.sh
. "$here/lib.sh"

rec=$(host "$RECORD")
[ -f "$rec/actions" ] || die "no install record in $RECORD: nothing to uninstall"
mapfile -t actions < <(tac "$rec/actions")

# containerd's config first: decide before anything is removed, so a config we cannot
# put back leaves the install whole (containerd must not import a missing drop-in).
config=$(grep -m1 '^config ' "$rec/actions" | cut -d' ' -f2-) || config=""
import_mode=$(grep -m1 '^import ' "$rec/actions" | cut -d' ' -f2) || import_mode=""
if [ -n "$config" ]; then
  file=$(host "$config")
  installed=$(cat "$rec/config.installed.sha256" 2>/dev/null || true)
  current=$(config_digest "$file")
  if [ -z "$import_mode" ] || [ -z "$installed" ] || [ "$current" = "$installed" ]; then
    # Unchanged since the install (or the install stopped before editing it): the original.
    if [ -f "$rec/config.orig" ]; then
      cp -p "$rec/config.orig" "$file"
    elif [ -f "$rec/config.absent" ]; then
      rm -f "$file"
    fi
  elif [ "$import_mode" != covered ]; then
    after=$(cat "$rec/import.after")
    before=$(cat "$rec/import.before" 2>/dev/null || true)
    grep -qxF -- "$after" "$file" ||
      die "$config was edited since the install and no longer has the line install.sh added ($after): remove \"$DROPIN\" from its imports by hand, then run uninstall.sh again"
    log "$config was edited since the install: only taking out the imports entry"
    awk -v old="$after" -v new="$before" -v mode="$import_mode" '
      !done && $0 == old { done = 1; if (mode == "appended") print new; next } { print }' \
      "$file" >"$file.stockade-new"
    chmod --reference="$file" "$file.stockade-new"
    chown --reference="$file" "$file.stockade-new"
    mv "$file.stockade-new" "$file"
  fi
fi

dirs=()
for a in "${actions[@]}"; do
  kind=${a%% *} path=${a#* }
  case "$kind" in
    file) rm -f "$(host "$path")" ;;
    replaced) cp -p "$rec/backup$path" "$(host "$path")" ;;
    dir) dirs+=("$path") ;;
    config|import) ;;
    *) log "unknown record line ignored: $a" ;;
  esac
done
rm -rf "$rec"
for d in "${dirs[@]}"; do
  [ -d "$(host "$d")" ] || continue
  rmdir "$(host "$d")" 2>/dev/null || log "left $d: it holds files install.sh did not put there"
done

restart_containerd
log "uninstalled"
