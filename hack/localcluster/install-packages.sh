#!/usr/bin/env bash
# Installs what the local cluster and the demo need from Debian's packages, if missing:
# PostgreSQL's server (the bundled database's "image") and nss_wrapper, iproute2 (the pod network),
# util-linux (nsenter, setpriv, flock), curl (the demo's commands) and python3 (the
# end-to-end tests' plain pods).
set -euo pipefail
missing=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
# The postgres wrapper runs as a user this machine does not list (999, the official
# image's); initdb needs a passwd entry, which nss_wrapper fakes, as in that image.
ls /usr/lib/*/libnss_wrapper.so >/dev/null 2>&1 || missing+=(libnss-wrapper)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v nsenter >/dev/null 2>&1 && command -v setpriv >/dev/null 2>&1 || missing+=(util-linux)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v git >/dev/null 2>&1 || missing+=(git)
# The end-to-end tests' plain pods serve HTTP with Python.
[ -x /usr/bin/python3 ] || missing+=(python3-minimal)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "missing packages: ${missing[*]}; install them as root (apt-get install ${missing[*]})" >&2
  exit 1
fi
echo ">> installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The local cluster runs its own PostgreSQL servers; Debian's default one is not used.
if command -v pg_ctlcluster >/dev/null 2>&1; then service postgresql stop >/dev/null 2>&1 || true; fi
