# Step 3: the static checks (the same as .pre-commit-config.yaml) and the documentation site.

.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy

# A broken link, a missing anchor or a page missing from the nav fails the build.
docs_site="$(mktemp -d)"
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --site-dir "$docs_site"
rm -rf "$docs_site"
