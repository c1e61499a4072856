"""transactions: transfers as event-sourced aggregates, and the saga's ledger of steps."""
