"""A C2SP tlog-witness (https://c2sp.org/tlog-witness) that partner agencies run: `isb witness serve`.

`core` holds the add-checkpoint semantics over an SQLite state file, `http` the HTTPS (mutual TLS)
binding, `submit` the client the broker uses to collect cosignatures.
"""
