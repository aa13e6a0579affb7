"""Store-and-forward delivery: accepting envelopes, per-agency queues, leases, receipts, expiry."""
