"""Alembic environment: runs migrations on the engine the broker hands over."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

import broker.audit.tables
import broker.store.tables
import broker.attachments.tables
import broker.watchlists.tables  # registers the tables on SQLModel.metadata, for autogenerate

del broker  # only imported for its side effect

target_metadata = SQLModel.metadata
engine = context.config.attributes["engine"]

with engine.begin() as connection:
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
