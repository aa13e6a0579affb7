"""The inter-agency secure broker: server, store, audit log, policy and PKI administration."""
