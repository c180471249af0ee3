"""Backfills over old tickets: time windows, their platform queries and checkpoints.

``triage.backfill.windows`` plans a run's windows and builds each window's query; the
checkpoint store lives in ``connectors.backfill_state``.
"""
