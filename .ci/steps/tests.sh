# Step 4: the README's test command (every suite: unit, contract, end-to-end, fault), with a
# coverage report whose floor is in pyproject ([tool.coverage.report] fail_under).

.venv/bin/pytest --cov --cov-report=term
