"""hookline workers: consumers of the event stream."""
