# Step 2: everything the checks and tests need, from scratch: system tools, then a fresh
# virtualenv with the project and its dev extras (test, docs, lint, types).

# The amqps tests make throwaway certificates with the openssl command.
if ! command -v openssl >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl \
        || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl; }
fi

rm -rf .venv
python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet -e '.[dev]'
