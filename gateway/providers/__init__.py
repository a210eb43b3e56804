"""Pure provider code: verify raw callbacks and normalize them to events."""
