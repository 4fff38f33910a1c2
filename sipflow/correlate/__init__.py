"""Calls from transactions and dialogs (B2BUA legs, proxy hops, media mapping to come)."""

from sipflow.correlate.calls import (
    ActivityRecord,
    BuilderOutput,
    CallBuilder,
    CallRecord,
    EndedBy,
    Outcome,
)

__all__ = ["ActivityRecord", "BuilderOutput", "CallBuilder", "CallRecord", "EndedBy", "Outcome"]
