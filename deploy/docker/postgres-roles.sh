#!/bin/sh
# The services' runtime roles, with the password the compose file hands the
# services (WALLET_DB_APP_PASSWORD). `walletctl migrate` (the compose
# file's `migrate`) finds them, checks them and grants them their
# privileges; it makes the owner roles itself.
set -eu
for name in transaction wallet ledger; do
    echo "CREATE ROLE :\"role\" LOGIN PASSWORD :'password';" |
        psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
            -v role="wallet_${name}_app" -v password="$WALLET_DB_APP_PASSWORD"
done
