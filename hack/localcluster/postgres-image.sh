#!/usr/bin/env bash
# Stands in for the official postgres image on the local cluster's node: the same
# environment (POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB, PGDATA), PostgreSQL from
# Debian's packages. initdb on the first start, then postgres in the foreground,
# listening on the pod's address.
#
# Like the official image's entrypoint it runs as whatever user the pod gives it
# (the bundled database's pod says 999, the image's postgres user): as root it
# switches to this machine's postgres user; as another user it relies on the pod's
# fsGroup for the data volume, restores the data directory's 0700 that an fsGroup
# change loosens, and fakes a passwd entry with nss_wrapper when the user has none
# (initdb insists on one).
set -euo pipefail
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
: "${PGDATA:=/var/lib/postgresql/data}"
: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"
: "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD is required}"

if [ "$(id -u)" = 0 ]; then
  mkdir -p "$PGDATA"
  chown postgres:postgres "$PGDATA"
  chmod 700 "$PGDATA"
  exec setpriv --reuid=postgres --regid=postgres --init-groups -- "$0" "$@"
fi

mkdir -p "$PGDATA"
chmod 700 "$PGDATA" || :
if ! getent passwd "$(id -u)" >/dev/null; then
  for wrapper in {/usr,}/lib{/*,}/libnss_wrapper.so; do
    if [ -s "$wrapper" ]; then
      NSS_WRAPPER_PASSWD=$(mktemp)
      NSS_WRAPPER_GROUP=$(mktemp)
      export LD_PRELOAD="$wrapper" NSS_WRAPPER_PASSWD NSS_WRAPPER_GROUP
      printf 'postgres:x:%s:%s:PostgreSQL:%s:/bin/false\n' "$(id -u)" "$(id -g)" "$PGDATA" >"$NSS_WRAPPER_PASSWD"
      printf 'postgres:x:%s:\n' "$(id -g)" >"$NSS_WRAPPER_GROUP"
      break
    fi
  done
fi
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  echo "initializing the database in $PGDATA"
  "$bin/initdb" -D "$PGDATA" -U "$POSTGRES_USER" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") \
    --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  echo "host all all 0.0.0.0/0 scram-sha-256" >>"$PGDATA/pg_hba.conf"
  if [ "$POSTGRES_DB" != postgres ]; then
    echo "CREATE DATABASE \"$POSTGRES_DB\"" | "$bin/postgres" --single -D "$PGDATA" postgres >/dev/null
  fi
fi
# No Unix socket: /tmp and /run are shared with the host and the other pods.
exec "$bin/postgres" -D "$PGDATA" -c listen_addresses='*' -c unix_socket_directories=''
