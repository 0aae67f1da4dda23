# shellcheck shell=bash
# Shared by deploy/install.sh and deploy/uninstall.sh (sourced, not run).
#
# Every change install.sh makes on the node is written to the install record
# ($ETC/install-record/actions, one `kind path` line each, before the change is made), so
# uninstall.sh can undo exactly those changes, in reverse order:
#   dir PATH        a directory install.sh created
#   file PATH       a file that did not exist before
#   replaced PATH   a file that existed: the original is in the record's backup/PATH
#   config PATH     containerd's config: the original is config.orig (or config.absent)
#   import MODE     how the drop-in was added to `imports` (import.before / import.after
#                   hold the line before and after the edit)

DESTDIR=${DESTDIR:-}
PREFIX=${PREFIX:-/usr/local}
ETC=${ETC:-/etc/stockade}
CONTAINERD_CONFIG=${CONTAINERD_CONFIG:-/etc/containerd/config.toml}
DROPIN=${DROPIN:-$(dirname "$CONTAINERD_CONFIG")/conf.d/stockade.toml}
CONTAINERD_CMD=${CONTAINERD_CMD:-containerd}
RESTART_CMD=${RESTART_CMD-systemctl restart containerd}
RECORD=$ETC/install-record

log() { echo "[stockade-install] $*" >&2; }
die() { log "error: $*"; exit 1; }

# A host path as this script sees it.
host() { printf '%s%s' "$DESTDIR" "$1"; }

record() { printf '%s\n' "$1" >>"$(host "$RECORD")/actions"; }

run_containerd() {
  local cmd
  read -ra cmd <<<"$CONTAINERD_CMD"
  "${cmd[@]}" "$@"
}

restart_containerd() {
  if [ -z "$RESTART_CMD" ]; then
    log "RESTART_CMD is empty: restart containerd yourself"
    return 0
  fi
  log "restarting containerd: $RESTART_CMD"
  sh -c "$RESTART_CMD" || die "restart command failed: $RESTART_CMD"
}

# sha256 of a file, `absent` if there is none (an import containerd already had may leave
# the config uncreated).
config_digest() {
  if [ -e "$1" ]; then sha256sum <"$1" | cut -d' ' -f1; else echo absent; fi
}

# Major version of the node's containerd (1 or 2).
containerd_major() {
  local out major
  out=$(run_containerd --version) || die "could not run '$CONTAINERD_CMD --version'"
  major=$(awk '{ for (i = 1; i <= NF; i++) { v = $i; sub(/^v/, "", v);
           if (v ~ /^[0-9]+\.[0-9]+\.[0-9]+/) { split(v, p, "."); print p[1]; exit } } }' <<<"$out")
  [ -n "$major" ] || die "no version in '$CONTAINERD_CMD --version': $out"
  printf '%s\n' "$major"
}

# The top-level `version = N` of a containerd config (empty if none).
config_version() {
  awk '/^[[:space:]]*\[/ { exit }
       /^[[:space:]]*version[[:space:]]*=[[:space:]]*[0-9]+/ { sub(/^[^=]*=[[:space:]]*/, ""); sub(/[^0-9].*$/, ""); print; exit }' "$1"
}

# The deploy/ snippet for a config version.
snippet_for() {
  case "$1" in
    2) echo containerd-stockade.toml ;;
    3) echo containerd-stockade-v3.toml ;;
  esac
}

# The runtime tables of Stockade's handlers in a snippet (no comments, no runc).
runtime_tables() {
  awk '/^[[:space:]]*#/ { next }
       /^[[:space:]]*\[/ { keep = ($0 ~ /\.runtimes\.stockade(-strict|-record)?[].]/) }
       keep' "$1"
}

# From `containerd config dump` (1.x, version 2) on stdin: the CRI plugin's section,
# without any runtime table of Stockade's handlers (install.sh appends its own).
cri_section_without_stockade() {
  awk -v cri='[plugins."io.containerd.grpc.v1.cri"' '
    /^[[:space:]]*\[/ {
      h = $0; sub(/^[[:space:]]+/, "", h)
      in_cri = (index(h, cri "]") == 1 || index(h, cri ".") == 1)
      ours = (h ~ /\.runtimes\.stockade(-strict|-record)?[].]/)
      found = found || in_cri
    }
    in_cri && !ours { print }
    END { if (!found) exit 1 }'
}

# Create a directory and its missing parents, recording each one created (those made
# before the record itself exists are recorded once it does).
mkdirs() {
  local path=$1 sofar="" part created=()
  local IFS=/
  for part in $path; do
    [ -n "$part" ] || continue
    sofar="$sofar/$part"
    if [ ! -d "$(host "$sofar")" ]; then
      mkdir "$(host "$sofar")"
      created+=("$sofar")
    fi
  done
  for part in "${created[@]}"; do record "dir $part"; done
}

# Record what is about to happen to file DEST (host path): new, or replaced (backed up).
prepare_file() {
  local dest=$1
  mkdirs "$(dirname "$dest")"
  if [ -e "$(host "$dest")" ]; then
    mkdir -p "$(host "$RECORD")/backup$(dirname "$dest")"
    cp -p "$(host "$dest")" "$(host "$RECORD")/backup$dest"
    record "replaced $dest"
  else
    record "file $dest"
  fi
}

install_file() { # MODE SRC DEST
  prepare_file "$3"
  install -m "$1" "$2" "$(host "$3")"
}

write_file() { # MODE DEST TEXT
  prepare_file "$2"
  printf '%s\n' "$3" >"$(host "$2")"
  chmod "$1" "$(host "$2")"
}

# Is PATH matched by one of the quoted entries of an `imports = [...]` line? Relative
# entries are relative to the config's directory, as containerd 2.x reads them; 1.x reads
# a relative glob against its working directory, so such an entry never counts there.
imports_cover() { # LINE CONFIG_DIR PATH
  local entry
  while IFS= read -r entry; do
    [ -n "$entry" ] || continue
    case "$entry" in
      /*) ;;
      *'*'*) [ "${major:-2}" -ge 2 ] || continue; entry="$2/$entry" ;;
      *) entry="$2/$entry" ;;
    esac
    # shellcheck disable=SC2053 # the entry is a glob on purpose
    [[ $3 == $entry ]] && return 0
  done < <(grep -oE '"[^"]*"|'"'"'[^'"'"']*'"'" <<<"$1" | sed -e 's/^.//' -e 's/.$//')
  return 1
}

# The config's top-level `imports` line (empty if none).
imports_line() {
  awk '/^[[:space:]]*\[/ { exit } /^[[:space:]]*imports[[:space:]]*=/ { print; exit }' "$1"
}

# Fail, before anything changes, on an `imports` that add_import cannot edit.
check_import() { # FILE
  local line
  [ -s "$1" ] || return 0
  line=$(imports_line "$1")
  if [ -n "$line" ] && [[ $line != *"]"* ]]; then
    die "$CONTAINERD_CONFIG: 'imports' spans several lines; put it on one line, or add \"$DROPIN\" to it yourself"
  fi
}

# Add DROPIN to the top-level `imports` of the config (host file FILE, version V),
# creating the config when it is absent or empty; nothing when containerd already imports
# it (EFFECTIVE_IMPORTS: the `imports` line of its config dump). Records how.
add_import() { # FILE VERSION DROPIN
  local file=$1 version=$2 dropin=$3 line new
  if imports_cover "${EFFECTIVE_IMPORTS:-}" "$(dirname "$CONTAINERD_CONFIG")" "$dropin"; then
    record "import covered"
    return
  fi
  if [ ! -s "$file" ]; then
    [ -e "$file" ] || mkdirs "$(dirname "$CONTAINERD_CONFIG")"
    new="imports = [\"$dropin\"]"
    printf 'version = %s\n%s\n' "$version" "$new" >"$file"
    printf '%s\n' "$new" >"$(host "$RECORD")/import.after"
    record "import created"
    return
  fi
  line=$(imports_line "$file")
  if [ -z "$line" ]; then
    new="imports = [\"$dropin\"]"
    # After the version line (top-level keys must come before the first table).
    awk -v new="$new" '{ print } !done && /^[[:space:]]*version[[:space:]]*=/ { print new; done = 1 }' \
      "$file" >"$file.stockade-new"
    printf '%s\n' "$new" >"$(host "$RECORD")/import.after"
    record "import added"
  elif imports_cover "$line" "$(dirname "$CONTAINERD_CONFIG")" "$dropin"; then
    record "import covered"
    return
  else
    if [[ $line =~ \[[[:space:]]*\] ]]; then
      new=${line/\[*\]/[\"$dropin\"]}
    else
      new="${line%]*}, \"$dropin\"]${line##*]}"
    fi
    awk -v old="$line" -v new="$new" '!done && $0 == old { print new; done = 1; next } { print }' \
      "$file" >"$file.stockade-new"
    printf '%s\n' "$line" >"$(host "$RECORD")/import.before"
    printf '%s\n' "$new" >"$(host "$RECORD")/import.after"
    record "import appended"
  fi
  # Same owner and mode as the original; then replace it in one step.
  chmod --reference="$file" "$file.stockade-new"
  chown --reference="$file" "$file.stockade-new"
  mv "$file.stockade-new" "$file"
}
