#!/bin/sh
# As in the official Redis image: `docker run IMAGE --maxmemory 1gb` runs redis-server.
set -e
case "${1:-}" in
    -*) set -- redis-server "$@" ;;
esac
exec "$@"
