#!/usr/bin/env bash
# Fails when git tracks a file that does not belong in the source tree: an executable
# (ELF, Mach-O), any other file git sees as binary unless it is allowed below, or a
# file over 1 MiB. It reads what is staged (the index), so it also catches a file
# added but not yet committed. `make verify` runs it; it takes well under a second.
set -euo pipefail
cd "$(dirname "$0")/.."

max_bytes=$((1024 * 1024))
# Binary files that belong here: the README's screenshots. Globs, matched on the path.
allowed_binary=('docs/*.png')

paths=() oids=()
while IFS= read -r -d '' entry; do
  read -r _ oid _ <<<"${entry%%$'\t'*}"
  paths+=("${entry#*$'\t'}")
  oids+=("$oid")
done < <(git ls-files -s -z)

mapfile -t sizes < <(printf '%s\n' "${oids[@]}" | git cat-file --batch-check='%(objectsize)')

# git's own test for binary: a NUL in the first 8000 bytes (i/-text in --eol).
declare -A binary=()
while IFS= read -r -d '' entry; do
  [[ $entry == i/-text* ]] && binary["${entry#*$'\t'}"]=1
done < <(git ls-files --eol -z)

allowed() {
  local p
  for p in "${allowed_binary[@]}"; do
    # shellcheck disable=SC2053 # the pattern is a glob on purpose
    [[ $1 == $p ]] && return 0
  done
  return 1
}

bad=()
for i in "${!paths[@]}"; do
  path=${paths[$i]} size=${sizes[$i]}
  if ((size > max_bytes)); then
    bad+=("$path: $((size / 1024)) KiB, over the 1 MiB limit")
  fi
  [[ -n ${binary[$path]:-} ]] || continue
  # head stops reading after four bytes; cat-file's SIGPIPE then is expected.
  magic=$({ git cat-file blob "${oids[$i]}" || true; } | head -c 4 | od -An -tx1 | tr -d ' \n')
  case $magic in
    7f454c46) bad+=("$path: an ELF executable") ;;
    feedface | feedfacf | cefaedfe | cffaedfe | cafebabe) bad+=("$path: a Mach-O executable") ;;
    *) allowed "$path" || bad+=("$path: a binary file") ;;
  esac
done

if ((${#bad[@]} > 0)); then
  echo "These tracked files do not belong in the repository (build outputs go to bin/, which git ignores):" >&2
  printf '  %s\n' "${bad[@]}" >&2
  echo "Remove them with 'git rm --cached FILE'. A binary that must be tracked (a doc image) goes into allowed_binary in $0." >&2
  exit 1
fi
