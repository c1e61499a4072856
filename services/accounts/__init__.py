"""accounts: customer accounts and the double-entry ledger behind them."""
