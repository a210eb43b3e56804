# Step 1: the services the tests talk to, started when they are not already running.
# RabbitMQ (with its management API, for the broker-user tests) and PostgreSQL; tests that need
# them fail instead of skipping when HOOKLINE_REQUIRE_BROKER=1.

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

if ! listening 5672; then
    echo "RabbitMQ is not listening on 127.0.0.1:5672; starting it"
    rabbitmq-server -detached || true
    for _ in $(seq 1 60); do listening 5672 && break; sleep 1; done
    rabbitmqctl await_startup >/dev/null 2>&1 || true
fi

# Enabling the plugin is idempotent; the API answers on 15672.
if ! listening 15672; then
    echo "RabbitMQ management API is not listening on 127.0.0.1:15672; enabling the plugin"
    rabbitmq-plugins enable rabbitmq_management >/dev/null
    for _ in $(seq 1 60); do listening 15672 && break; sleep 1; done
    listening 15672 || { echo "RabbitMQ management API did not come up on 127.0.0.1:15672" >&2; exit 1; }
fi

# The ledger and store tests need PostgreSQL on 127.0.0.1:5432 (trust auth, user postgres).
if ! listening 5432; then
    echo "PostgreSQL is not listening on 127.0.0.1:5432; starting it"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start \
        || service postgresql start || true
    for _ in $(seq 1 60); do listening 5432 && break; sleep 1; done
fi
