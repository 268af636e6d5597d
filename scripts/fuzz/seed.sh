# Sourced by scripts/test: gives the fuzzer's instance real things to act on, so that every
# operation is exercised past "not found": stores with stocked products, orders, a replenishment
# started by hand, and dead letters. Prints the TOML that binds the fuzzer's ids to them
# (half of the ids it sends are these, half its own), for scripts/test to append to the
# fuzzer's settings.
#
# seed_fuzz API KEY DATABASE_URL
#
# shellcheck shell=bash

# What the instance logs, at ERROR, when it refuses the seeded dead letters (and their replays).
FUZZ_SEEDED_ERROR='unsupported message version 99'

seed_fuzz() {
    local api="$1" key="$2" url="$3"
    call() {
        curl -fsS -X "$1" "$api$2" -H "Authorization: Bearer $key" -H 'content-type: application/json' ${3:+-d "$3"} ||
            die "seeding the fuzzer's instance: $1 $2 failed"
    }
    # created METHOD PATH BODY: the id of what it made (fails, having said why, when none).
    created() {
        local id
        id="$(call "$@" | jq -r .id)"
        [[ "$id" =~ ^[0-9a-f-]{36}$ ]] || die "seeding the fuzzer's instance: $1 $2 made nothing"
        printf '%s' "$id"
    }
    local stores=() products=() orders=() sagas=() letters=() store product order saga n
    for n in 1 2; do
        store="$(created POST /stores "{\"name\": \"Fuzz $n\", \"service_area\": \"F$n\"}")" || exit 1
        stores+=("$store")
    done
    for n in 1 2 3; do
        product="$(created POST /products "{\"sku\": \"FUZZ-$n\", \"name\": \"Fuzz $n\", \"price_cents\": 250}")" || exit 1
        products+=("$product")
        call PUT "/warehouse/stock/$product" '{"on_hand": 1000000}' >/dev/null
        for store in "${stores[@]}"; do
            call PUT "/stores/$store/inventory/$product" \
                '{"on_hand": 1000000, "reorder_threshold": 10, "target_level": 2000000}' >/dev/null
        done
    done
    for product in "${products[@]}"; do
        order="$(created POST /orders "{\"store_id\": \"${stores[0]}\", \"items\": [{\"product_id\": \"$product\", \"quantity\": 1}]}")" ||
            exit 1
        orders+=("$order")
    done
    saga="$(created POST /replenishments \
        "{\"store_id\": \"${stores[1]}\", \"product_id\": \"${products[0]}\", \"quantity\": 5, \"reason\": \"fuzz\"}")" || exit 1
    sagas+=("$saga" "${orders[@]}")

    # Dead letters, made the way a newer producer would: commands of a version this build does
    # not speak, written to the outbox; the relay sends them, the warehouse worker refuses them
    # and the dead-letter keeper stores them.
    psql "$url" -X -q -v ON_ERROR_STOP=1 >/dev/null <<'SQL' || die "seeding the fuzzer's dead letters failed"
WITH written AS (
    INSERT INTO outbox (message_id, exchange, routing_key, message_type, body, raw)
    SELECT gen_random_uuid(), 'saga.commands', 'warehouse', 'DispatchShipment', 'null',
           convert_to(format('{"version": 99, "message_id": "%s", "type": "DispatchShipment", "payload": {}}',
                             gen_random_uuid()), 'UTF8')
    FROM generate_series(1, 6)
    RETURNING id)
INSERT INTO outbox_pending (id) SELECT id FROM written;
SQL
    local deadline=$((SECONDS + 30)) page
    while :; do
        page="$(call GET '/dead-letters?limit=10')"
        (($(jq '.items | length' <<<"$page") >= 6)) && break
        ((SECONDS < deadline)) || die "seeding the fuzzer: the dead letters did not arrive within 30 s"
        sleep 0.2
    done
    mapfile -t letters < <(jq -r '.items[].id' <<<"$page")

    quoted() { printf '"%s", ' "$@" | sed 's/, $//'; }
    local half='probability = 0.5'
    cat <<TOML

# Seeded by scripts/fuzz/seed.sh for this run.
[dictionaries]
stores = { values = [$(quoted "${stores[@]}")] }
products = { values = [$(quoted "${products[@]}")] }
orders = { values = [$(quoted "${orders[@]}")] }
sagas = { values = [$(quoted "${sagas[@]}")] }
dead_letters = { values = [$(printf '%s, ' "${letters[@]}" | sed 's/, $//')] }

[parameters]
"path.store_id" = { dictionary = "stores", $half }
"query.store_id" = { dictionary = "stores", $half }
"body.store_id" = { dictionary = "stores", $half }
"path.product_id" = { dictionary = "products", $half }
"query.product_id" = { dictionary = "products", $half }
"body.product_id" = { dictionary = "products", $half }
"body.items[*].product_id" = { dictionary = "products", $half }

[[operations]]
include-path = "/stores/{id}"
parameters = { "path.id" = { dictionary = "stores", $half } }

[[operations]]
include-path = "/products/{id}"
parameters = { "path.id" = { dictionary = "products", $half } }

[[operations]]
include-path-regex = "^/orders/\\\\{id\\\\}"
parameters = { "path.id" = { dictionary = "orders", $half } }

[[operations]]
include-path-regex = "^/sagas/\\\\{id\\\\}"
parameters = { "path.id" = { dictionary = "sagas", $half } }

[[operations]]
include-path-regex = "^/dead-letters/\\\\{id\\\\}"
parameters = { "path.id" = { dictionary = "dead_letters", $half } }
TOML
}
