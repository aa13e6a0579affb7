"""The wire protocol shared by the broker and the agency SDK.

Public: `envelope` (seal, open, verify), `keys` (key bundles), `receipts`. Internal, not to be
called casually: `_pae` (signature pre-authentication encoding), `_merkle` (RFC 9162 hashing and
proofs), `_note` (C2SP signed notes).
"""
