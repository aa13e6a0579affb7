"""Durable state of the broker: tables, engine set-up and the group-commit writer."""
