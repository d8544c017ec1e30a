"""Event sources: file drops, schedules, webhooks. Each turns something outside into an event."""
