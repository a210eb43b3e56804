"""Usage metering: the ledger, its counting rules, the usage worker, report and reconcile."""
