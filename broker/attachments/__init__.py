"""Attachments on the broker: the blob store, uploads and downloads, expiry (docs/protocol.md "Attachments")."""
