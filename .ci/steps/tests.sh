# Step 4: the README's test command (every suite: unit, contract, end-to-end, fault).

.venv/bin/pytest
